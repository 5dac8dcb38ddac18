//! Word lists from configuration: a directory whose `<category>.txt` files
//! replace the built-in lists of those categories (same format: one term
//! or phrase per line, `#` starts a comment, `~` starts a topic term that
//! counts only when the learned stage confirms it). Read once at start-up.

use std::path::Path;

use crate::moderation::{Category, parse_word_list};

/// Replaces the terms of each category that has a file in `dir`. A file
/// naming no known category is an error, so a typo cannot silently disable
/// a list.
pub fn apply_overrides(dir: &Path, mut categories: Vec<Category>) -> Result<Vec<Category>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read word lists in {}: {e}", dir.display()))?;
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|x| x == "txt")) {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(category) = categories.iter_mut().find(|c| c.name == name) else {
            let known: Vec<_> = categories.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "{}: no category named {name:?} (known: {})",
                path.display(),
                known.join(", ")
            ));
        };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        (category.terms, category.topics) = parse_word_list(&text);
    }
    Ok(categories)
}

/// The word-list stage: built-in lists, with the files of `dir` (if any)
/// in place of the lists they name.
pub fn rule_moderator(dir: Option<&Path>) -> Result<crate::moderation::RuleModerator, String> {
    let categories = crate::moderation::default_categories();
    let categories = match dir {
        Some(d) => apply_overrides(d, categories)?,
        None => categories,
    };
    Ok(crate::moderation::RuleModerator::new(categories))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::{RuleModerator, default_categories};
    use crate::ports::Moderator;
    use convo_schema::SafetyAction;

    #[test]
    fn a_file_replaces_its_category_and_unknown_names_are_refused() {
        let dir = std::env::temp_dir().join(format!("convo-wordlists-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("profanity.txt"), "# house rules\nfiddlesticks\n").unwrap();
        let m = RuleModerator::new(apply_overrides(&dir, default_categories()).unwrap());
        assert_eq!(m.screen("oh fiddlesticks").categories, vec!["profanity"]);
        assert_eq!(
            m.screen("oh shit").action,
            SafetyAction::Safe,
            "the built-in profanity list was replaced"
        );
        assert_eq!(
            m.screen("I want to kill myself").categories,
            vec!["self_harm"],
            "other lists stay"
        );
        std::fs::write(dir.join("profanty.txt"), "x\n").unwrap();
        let err = apply_overrides(&dir, default_categories()).unwrap_err();
        assert!(err.contains("profanty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
