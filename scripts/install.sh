#!/usr/bin/env bash
# Installs everything cordon needs on Debian 12: the Debian packages (QEMU,
# image-building tools, bubblewrap) through apt-get, and the npm packages, then
# builds the TypeScript sources. Safe to run again: it only adds what is missing.
#
# Usage: scripts/install.sh            (as root, or with sudo available)
#        CORDON_SKIP_APT=1 scripts/install.sh   (npm part only)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages cordon uses. Each line: package — what for.
APT_PACKAGES=(
  qemu-system-x86   # microvm sandboxes
  qemu-utils        # qemu-img: copy-on-write sandbox disks
  debootstrap       # guest root file system
  e2fsprogs         # mkfs.ext4 -d: guest disk image
  busybox-static    # guest initramfs
  musl-tools        # static guest agent
  make
  cpio
  xz-utils
  zstd
  bubblewrap        # bubblewrap back end, confining local tool servers
  runsc             # gvisor back end (development tier)
  ca-certificates
  git
  curl
  chromium          # dashboard tests in a real browser (playwright-core drives it)
  postgresql        # the PostgreSQL store's tests start throw-away servers (cordon itself needs none; the package's own cluster is stopped below)
)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "cordon needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "fix: install Node.js 20 (e.g. from the NodeSource or Debian backports packages) and run this again." >&2
  exit 1
fi

if [ "${CORDON_SKIP_APT:-0}" != "1" ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
      SUDO="sudo"
    fi
    say "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if printf '%s\n' "${missing[@]}" | grep -qx postgresql && command -v pg_lsclusters >/dev/null; then
      # cordon's tests start throw-away servers of their own: the cluster Debian creates with the
      # package is not needed, so it is stopped and left to start by hand (its data is kept).
      pg_lsclusters -h | while read -r version cluster _; do
        $SUDO pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
        echo manual | $SUDO tee "/etc/postgresql/$version/$cluster/start.conf" >/dev/null
        say "PostgreSQL cluster $version/$cluster (created by the package) stopped and set to start by hand"
      done
    fi
  else
    say "Debian packages: all present"
  fi
fi

# QEMU 8.2 or newer maps a snapshot's memory read-only and copy-on-write, so
# sandboxes restored from a snapshot share the template's pages (idle VMM about
# 70 MiB instead of 140, see BENCHMARKS.md). Debian 12 ships QEMU 7.2; Debian's
# own backports archive has a newer one. CORDON_QEMU_BACKPORTS=0 keeps 7.2
# (cordon then restores snapshots the plain way).
qemu_recent() {
  local v
  v=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 8 ] || { [ "${1:-0}" -eq 8 ] && [ "${2:-0}" -ge 2 ]; }
}
if [ "${CORDON_SKIP_APT:-0}" != "1" ] && [ "${CORDON_QEMU_BACKPORTS:-1}" = "1" ] && ! qemu_recent \
   && grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding Debian's bookworm-backports archive (for QEMU 8.2 or newer)"
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | $SUDO tee /etc/apt/sources.list.d/cordon-bookworm-backports.sources >/dev/null
  fi
  say "apt-get install -t bookworm-backports qemu-system-x86 qemu-utils"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
  qemu_recent || { echo "QEMU is still older than 8.2 after the backports install; set CORDON_QEMU_BACKPORTS=0 to keep it" >&2; exit 1; }
fi

say "npm packages"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi

say "build"
npm run build --silent
say "guest agent (static C binaries)"
make -s -C guest/agent
say "done: run ./bin/cordon.js doctor to see what this machine offers"
say "next: ./bin/cordon.js image build && ./bin/cordon.js demo   (the guest image, then the whole system in one run)"
