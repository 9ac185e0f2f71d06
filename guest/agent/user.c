/*
 * User lookup from /etc/passwd and /etc/group, parsed directly so the static
 * binary needs no NSS. Only the fields exec needs: uid, gid, supplementary
 * groups, home directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* Split `line` on ':' into at most `max` fields; returns the field count. */
static int split(char *line, char **f, int max) {
  int n = 0;
  char *p = line;
  line[strcspn(line, "\n")] = '\0';
  while (n < max) {
    f[n++] = p;
    char *c = strchr(p, ':');
    if (!c) break;
    *c = '\0';
    p = c + 1;
  }
  return n;
}

static bool parse_id(const char *s, uint32_t *out) {
  uint64_t v;
  if (!parse_u64(s, &v) || v > 0xfffffffeu) return false;
  *out = (uint32_t)v;
  return true;
}

static void add_group(struct user_info *u, gid_t g) {
  for (int i = 0; i < u->ngroups; i++)
    if (u->groups[i] == g) return;
  if (u->ngroups < (int)(sizeof u->groups / sizeof u->groups[0])) u->groups[u->ngroups++] = g;
}

static void load_groups(struct user_info *u) {
  char line[4096];
  char *f[4];
  FILE *fp = fopen("/etc/group", "re");
  u->ngroups = 0;
  add_group(u, u->gid);
  if (!fp) return;
  while (fgets(line, sizeof line, fp)) {
    uint32_t gid;
    if (split(line, f, 4) < 4 || !parse_id(f[2], &gid)) continue;
    for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
      if (strcmp(m, u->name) == 0) add_group(u, (gid_t)gid);
  }
  fclose(fp);
}

/* Find a passwd entry by name (name != NULL) or by uid. 0 = found, -1 = not. */
static int lookup(const char *name, uid_t uid, struct user_info *u) {
  char line[4096];
  char *f[7];
  FILE *fp = fopen("/etc/passwd", "re");
  memset(u, 0, sizeof *u);
  if (!fp) return -1;
  while (fgets(line, sizeof line, fp)) {
    uint32_t pu, pg;
    if (split(line, f, 7) < 7 || !parse_id(f[2], &pu) || !parse_id(f[3], &pg)) continue;
    if (name ? strcmp(f[0], name) != 0 : pu != uid) continue;
    if (strlen(f[0]) >= sizeof u->name || strlen(f[5]) >= sizeof u->home) continue;
    u->uid = pu;
    u->gid = pg;
    strcpy(u->name, f[0]);
    strcpy(u->home, f[5]);
    u->found = true;
    break;
  }
  fclose(fp);
  if (!u->found) return -1;
  load_groups(u);
  return 0;
}

int user_lookup_name(const char *name, struct user_info *u) { return lookup(name, 0, u); }

int user_lookup_uid(uid_t uid, struct user_info *u) { return lookup(NULL, uid, u); }
