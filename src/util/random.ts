/**
 * A small deterministic random generator (mulberry32: 32 bits of state), for
 * simulations and seeded property tests, where a failure must replay from
 * its seed. Not for anything secret: use `node:crypto` there.
 *
 * @example
 * const next = seededRandom(1234);
 * next(); // a number in [0, 1), the same sequence for the same seed
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return function next(): number {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
