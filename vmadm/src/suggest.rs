//! "Did you mean ...?": the closest of a set of known words to a mistyped one.

use strsim::levenshtein as distance;

/// The candidate closest to `word`, if it is close enough to be a plausible typo
/// (at most a third of the word's length, and at least 1 or 2 edits allowed), or if
/// `word` is a prefix of exactly that candidate. Distance is Levenshtein's, in
/// characters.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (word.chars().count() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let d = if candidate.starts_with(word) && !word.is_empty() {
            // "web" for "web01": a prefix is as good as one edit.
            1
        } else {
            distance(word, candidate)
        };
        if d <= allowed && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("web1", "web01"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn closest_picks_a_plausible_typo_only() {
        let names = ["web01", "web02x", "db01"];
        assert_eq!(closest("web1", names), Some("web01"));
        assert_eq!(closest("db1", names), Some("db01"));
        assert_eq!(closest("web", names), Some("web01"));
        assert_eq!(closest("zzzzzz", names), None);
        assert_eq!(closest("web01", ["web01"]), None);
    }
}
