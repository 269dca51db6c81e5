//! Test-only helpers: a tiny deterministic PRNG and a byte mutator, so every decoder can be
//! fed thousands of near-valid bodies in `cargo test` without a fuzzing toolchain.

/// xorshift64*: deterministic, dependency-free, good enough to pick mutations.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Bytes that tend to matter to parsers: structure, quotes, escapes, varint continuation.
const INTERESTING: &[u8] = b"\0\xff\x80\x7f{}[]\",:\\=\n\r 0-.eE";

/// Applies one to four random edits (flip, insert, delete, overwrite, truncate, duplicate)
/// to `input`.
pub(crate) fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let b = if rng.below(2) == 0 { INTERESTING[rng.below(INTERESTING.len())] } else { rng.next() as u8 };
                out.insert(i, b);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out.remove(i);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 => out.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(64)).min(len);
                let piece = out[start..end].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, piece);
            }
            _ => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
        }
    }
    out
}

/// Calls `check` with `count` mutations of `seed` (a panic inside fails the test).
pub(crate) fn mutations(seed: &[u8], count: usize, mut check: impl FnMut(&[u8])) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ seed.len() as u64);
    for _ in 0..count {
        let m = mutate(seed, &mut rng);
        check(&m);
    }
}
