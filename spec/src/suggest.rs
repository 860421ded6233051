//! "Did you mean ...?" hints for misspelled node and property names.

/// The closest of `known` to `word`, if it is close enough to be a likely typo
/// (edit distance at most a third of the word, and at least 1 allowed; a swap of two
/// neighbours counts as one edit: `memroy` is one typo away from `memory`).
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::osa_distance(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_not_strangers() {
        let known = ["memory", "cpu-cap", "pids", "image"];
        assert_eq!(closest("memroy", &known), Some("memory"));
        assert_eq!(closest("cpucap", &known), Some("cpu-cap"));
        assert_eq!(closest("imag", &known), Some("image"));
        assert_eq!(closest("banana", &known), None);
        assert_eq!(closest("", &known), None);
    }
}
