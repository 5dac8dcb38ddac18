//! The personal-data detectors of the word-list stage: e-mail addresses,
//! phone numbers (digit runs with cues), card numbers (Luhn) and street
//! addresses, found as spans so that redaction can mask them.

/// `local@domain.tld`, found without a regex engine.
pub(crate) fn has_email(text: &str) -> bool {
    !email_spans(text).is_empty()
}

/// The byte ranges of the e-mail addresses in `text`.
pub(crate) fn email_spans(text: &str) -> Vec<(usize, usize)> {
    let base = text.as_ptr() as usize;
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '<' || c == '>')
        .map(|tok| tok.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|tok| is_email(tok))
        .map(|tok| {
            let start = tok.as_ptr() as usize - base;
            (start, start + tok.len())
        })
        .collect()
}

pub(crate) fn is_email(tok: &str) -> bool {
    match tok.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
        None => false,
    }
}

/// A run of digits broken only by single separators (a space, dot, dash or
/// bracket, at most two in a row), as people write phone and card numbers.
#[derive(Debug, Default)]
pub(crate) struct DigitRun {
    /// Byte offsets of the first digit and just past the last one.
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) digits: Vec<u8>,
    /// Lengths of the digit groups between separators.
    pub(crate) groups: Vec<usize>,
    /// Led by `+` (an international phone number).
    pub(crate) plus: bool,
    /// How many groups are separated by a dot, and whether any by a
    /// bracket (never so in a card number).
    pub(crate) dots: usize,
    pub(crate) brackets: bool,
    /// Touching a letter, as in a hex id or "ab1234567890".
    pub(crate) glued: bool,
    /// Followed by `:` and a digit: the hour of a clock time.
    pub(crate) clock: bool,
}

/// Every digit run of `text`, in one pass.
pub(crate) fn digit_runs(text: &str) -> Vec<DigitRun> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut runs = Vec::new();
    let mut run = DigitRun::default();
    // The separators since the last digit: how many, any dot, any bracket.
    let mut gap = (0, false, false);
    for (i, &(at, c)) in chars.iter().enumerate() {
        if c.is_ascii_digit() {
            run.push_digit(&chars, i, at, gap);
            gap = (0, false, false);
        } else if matches!(c, ' ' | '-' | '.' | '(' | ')') && !run.digits.is_empty() && gap.0 < 2 {
            gap = (gap.0 + 1, gap.1 || c == '.', gap.2 || matches!(c, '(' | ')'));
        } else {
            if !run.digits.is_empty() {
                run.close(&chars, i, gap.0);
                runs.push(std::mem::take(&mut run));
            }
            gap = (0, false, false);
        }
    }
    if !run.digits.is_empty() {
        run.close(&chars, chars.len(), gap.0);
        runs.push(run);
    }
    runs
}

/// Words before a short number that make it a phone number.
pub(crate) const PHONE_CUES: &[&str] = &[
    "phone",
    "number",
    "call",
    "text",
    "ring",
    "mobile",
    "cell",
    "telephone",
    "whatsapp",
    "tel",
];

impl DigitRun {
    /// Adds the digit `chars[i]` (byte offset `at`), after `gap`: the count
    /// of separators since the previous digit and whether one was a dot or
    /// a bracket.
    pub(crate) fn push_digit(&mut self, chars: &[(usize, char)], i: usize, at: usize, gap: (usize, bool, bool)) {
        if self.digits.is_empty() {
            let prev = i.checked_sub(1).map(|p| chars[p].1);
            self.start = at;
            self.plus = prev == Some('+');
            self.glued = prev.is_some_and(char::is_alphabetic);
        }
        if gap.0 > 0 || self.groups.is_empty() {
            self.groups.push(0);
        }
        *self.groups.last_mut().expect("a group") += 1;
        self.digits.push(chars[i].1 as u8 - b'0');
        self.end = at + 1;
        self.dots += usize::from(gap.1);
        self.brackets |= gap.2;
    }

    /// Ends a run at `chars[i]`, `gap` separators after its last digit.
    pub(crate) fn close(&mut self, chars: &[(usize, char)], i: usize, gap: usize) {
        let next = chars.get(i).map(|c| c.1);
        let after = chars.get(i + 1).map(|c| c.1);
        if gap == 0 {
            self.glued |= next.is_some_and(char::is_alphabetic);
            self.clock = next == Some(':') && after.is_some_and(|c| c.is_ascii_digit());
        }
    }

    /// 10 to 15 digits standing on their own (7 to 9 written as a local
    /// number, "555 0134", after a word such as "phone" or "call"), and not
    /// a clock time, a decimal number, an ISBN or a counted list ("10 20 30
    /// 40 50").
    pub(crate) fn is_phone(&self, text: &str) -> bool {
        let n = self.digits.len();
        let local = self.groups.len() >= 2 && self.groups.last() == Some(&4) && self.cued(text);
        let long_enough = (10..=15).contains(&n) || ((7..=9).contains(&n) && local);
        long_enough
            && !self.glued
            && !self.clock
            && self.dots != 1
            && self.groups.last().is_some_and(|&g| g >= 2)
            && !self.counted_list()
    }

    /// Four or more groups all alike ("100 200 300 400") or all short, not
    /// led by `+` or a trunk `0` as real numbers written that way are.
    pub(crate) fn counted_list(&self) -> bool {
        let g = &self.groups;
        !self.plus && self.digits[0] != 0 && g.len() >= 4 && (g.iter().all(|&x| x == g[0]) || g.iter().all(|&x| x <= 2))
    }

    /// One of the three words before the run is a phone cue.
    pub(crate) fn cued(&self, text: &str) -> bool {
        text[..self.start]
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .rev()
            .take(3)
            .any(|w| PHONE_CUES.contains(&w.to_lowercase().as_str()))
    }

    /// 13 to 19 digits passing the Luhn check, starting as payment cards do
    /// (2 to 6), ungrouped or in groups of four or more ("4111 1111 1111
    /// 1111", "3782 822463 10005"), possibly followed by a short group (an
    /// expiry or security code).
    pub(crate) fn is_card(&self) -> bool {
        if self.plus || self.glued || self.brackets || self.dots > 0 {
            return false;
        }
        let last = *self.groups.last().expect("a group");
        card_digits(&self.digits, &self.groups)
            || (self.groups.len() > 1
                && card_digits(
                    &self.digits[..self.digits.len() - last],
                    &self.groups[..self.groups.len() - 1],
                ))
    }
}

pub(crate) fn card_digits(digits: &[u8], groups: &[usize]) -> bool {
    (13..=19).contains(&digits.len())
        && (2..=6).contains(&digits[0])
        && groups[..groups.len() - 1].iter().all(|&g| g >= 4)
        && luhn(digits)
}

/// The Luhn checksum of card numbers: every second digit from the right
/// doubled (less 9 above 9), the sum a multiple of 10.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, u32::from(d) * 2) {
            (0, _) => u32::from(d),
            (_, x) if x > 9 => x - 9,
            (_, x) => x,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Street types closing an address ("Oak Street", "Baker St.").
pub(crate) const STREET_TYPES: &[&str] = &[
    "street",
    "st",
    "avenue",
    "ave",
    "av",
    "road",
    "rd",
    "lane",
    "ln",
    "drive",
    "dr",
    "boulevard",
    "blvd",
    "court",
    "ct",
    "place",
    "pl",
    "terrace",
    "close",
    "crescent",
    "way",
    "circle",
    "cir",
    "square",
    "sq",
    "highway",
    "hwy",
    "parkway",
    "pkwy",
    "row",
    "gardens",
    "grove",
    "mews",
];

/// Words before a number that make it something other than a house number
/// ("in 1969", "level 5 Rainbow Road").
pub(crate) const NOT_HOUSE: &[&str] = &[
    "in", "since", "until", "till", "year", "years", "level", "page", "chapter", "room", "grade", "route", "bus",
    "channel", "episode", "season", "part", "book", "volume", "class",
];

/// Words before a number that say where someone lives, so a lower-case
/// street name counts too ("i live at 12 cherry lane").
pub(crate) const HOME_CUES: &[&str] = &[
    "live", "lives", "living", "lived", "address", "house", "home", "stay", "stays", "moved",
];

/// Words that never belong to a street name written in lower case.
pub(crate) const NOT_NAME: &[&str] = &[
    "the", "a", "an", "of", "on", "in", "at", "to", "from", "and", "or", "my", "our", "your", "his", "her", "their",
    "down", "up", "by", "for", "with", "near", "away", "is", "are", "was",
];

/// A street address: a house number ("42", "221B"), one to four name words
/// and a street type: "42 Oak Street", "1600 Pennsylvania Avenue",
/// "10 Downing St.". Name words are capitalised or ordinals ("5th"), or any
/// word after a cue such as "live" or "address". Linear: each word is looked
/// at a bounded number of times.
pub(crate) fn has_street_address(text: &str) -> bool {
    !street_address_spans(text).is_empty()
}

/// The byte ranges of the street addresses in `text`, house number to
/// street type.
pub(crate) fn street_address_spans(text: &str) -> Vec<(usize, usize)> {
    let base = text.as_ptr() as usize;
    let raw: Vec<&str> = text.split_whitespace().collect();
    let words: Vec<String> = raw.iter().map(|w| bare(w).to_lowercase()).collect();
    let offset = |w: &str| w.as_ptr() as usize - base;
    (0..raw.len())
        .filter_map(|i| {
            let before = &words[i.saturating_sub(3)..i];
            if !is_house_number(bare(raw[i]))
                || i.checked_sub(1).is_some_and(|p| NOT_HOUSE.contains(&words[p].as_str()))
            {
                return None;
            }
            let k = street_follows(&raw[i + 1..], before.iter().any(|w| HOME_CUES.contains(&w.as_str())))?;
            let last = bare(raw[i + 1 + k]);
            Some((offset(bare(raw[i])), offset(last) + last.len()))
        })
        .collect()
}

/// A word without the punctuation around it.
pub(crate) fn bare(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_alphanumeric())
}

/// 1 to 5 digits, not starting with 0, maybe one letter after ("221B").
pub(crate) fn is_house_number(w: &str) -> bool {
    let digits = w.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &w[digits..];
    (1..=5).contains(&digits)
        && !w.starts_with('0')
        && (rest.is_empty() || (rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_alphabetic())))
}

/// Name words then a street type, within five words and one clause: the
/// index in `rest` of the street type.
pub(crate) fn street_follows(rest: &[&str], lenient: bool) -> Option<usize> {
    for (k, raw) in rest.iter().take(5).enumerate() {
        let w = bare(raw);
        if k > 0 && STREET_TYPES.contains(&w.to_lowercase().as_str()) {
            return Some(k);
        }
        let clause_ends = raw.ends_with([',', '.', '!', '?', ';', ':']);
        if clause_ends || !is_name_word(w, lenient) {
            return None;
        }
    }
    None
}

/// "Oak", "Pennsylvania", "5th"; any plain word when `lenient`.
pub(crate) fn is_name_word(w: &str, lenient: bool) -> bool {
    let digits = w.bytes().take_while(u8::is_ascii_digit).count();
    let ordinal = digits > 0 && ["st", "nd", "rd", "th"].contains(&w[digits..].to_lowercase().as_str());
    let capital = w.chars().next().is_some_and(char::is_uppercase) && w.chars().all(|c| c.is_alphabetic() || c == '\'');
    let plain = w.chars().all(|c| c.is_alphabetic() || c == '\'') && !NOT_NAME.contains(&w.to_lowercase().as_str());
    ordinal || capital || (lenient && plain && !w.is_empty())
}
