use super::*;
use proptest::prelude::*;

fn moderator() -> &'static LayeredModerator {
    static M: std::sync::OnceLock<LayeredModerator> = std::sync::OnceLock::new();
    M.get_or_init(|| LayeredModerator::from_dir(None).expect("the built-in moderator"))
}

fn scores(pairs: &[(&str, f32)]) -> Scores {
    let mut probability = [0f32; 10];
    let mut hit = [false; 10];
    for (c, p) in pairs {
        let i = convo_safety::CATEGORIES.iter().position(|x| x == c).unwrap();
        probability[i] = *p;
        hit[i] = true;
    }
    Scores {
        probability,
        hit,
        windows: 1,
    }
}

#[test]
fn a_learned_finding_raises_the_band_and_names_its_stage_and_model() {
    let rules = SafetyVerdict::safe();
    let v = combine(rules, &scores(&[("grooming", 0.9)]), "m-1");
    assert_eq!(v.action, SafetyAction::Flagged);
    assert_eq!(v.categories, vec!["grooming"]);
    assert_eq!(v.severity, Some(Severity::High));
    assert_eq!(v.findings[0].stage, SafetyStage::Learned);
    assert_eq!(v.findings[0].probability, Some(0.9));
    assert_eq!(v.model.as_deref(), Some("m-1"));
    assert_eq!(v.reason.as_deref(), Some("learned grooming"));
    let v = combine(SafetyVerdict::safe(), &scores(&[("sexual_minors", 0.7)]), "m-1");
    assert_eq!(v.action, SafetyAction::Blocked);
    assert_eq!(v.severity, Some(Severity::Critical));
}

#[test]
fn self_harm_from_the_model_is_flagged_at_critical_never_blocked() {
    let v = combine(SafetyVerdict::safe(), &scores(&[("self_harm", 0.99)]), "m");
    assert_eq!(v.action, SafetyAction::Flagged);
    assert_eq!(v.severity, Some(Severity::Critical));
    // With other harm, the others decide.
    let v = combine(
        SafetyVerdict::safe(),
        &scores(&[("self_harm", 0.9), ("hate", 0.9)]),
        "m",
    );
    assert_eq!(v.action, SafetyAction::Blocked);
}

#[test]
fn a_category_the_word_lists_found_keeps_their_finding() {
    let rules = moderator().rules.screen("I want to kill myself");
    assert_eq!(rules.categories, vec!["self_harm"]);
    let v = combine(rules.clone(), &scores(&[("self_harm", 0.99)]), "m");
    assert_eq!(v, rules, "nothing new was found");
    let rules = moderator().rules.screen("call me on 415-555-0101");
    let v = combine(rules.clone(), &scores(&[("personal_data", 0.99)]), "m");
    assert_eq!(v, rules, "the detectors already found the personal data");
}

proptest! {
    /// Whatever the lists said and the model found, the combined verdict
    /// keeps every category the lists found and never scores above them.
    #[test]
    fn the_learned_stage_never_lowers_a_word_list_verdict(
        text in prop::sample::select(vec![
            "hello there", "you are so stupid", "I want to kill myself", "shit", "my email is a@b.co",
            "let's get drunk and high", "I'll punch you", "send nudes",
        ]),
        hits in prop::collection::vec((0usize..10, 0.0f32..1.0), 0..6),
    ) {
        let rules = moderator().rules.screen(text);
        let pairs: Vec<(&str, f32)> = hits.iter().map(|(i, p)| (convo_safety::CATEGORIES[*i], *p)).collect();
        let v = combine(rules.clone(), &scores(&pairs), "m");
        prop_assert!(v.score <= rules.score);
        let rank = |a: SafetyAction| match a { SafetyAction::Safe => 0, SafetyAction::Flagged => 1, SafetyAction::Blocked => 2 };
        prop_assert!(rank(v.action) >= rank(rules.action));
        for c in &rules.categories {
            prop_assert!(v.categories.contains(c));
        }
        prop_assert!(v.severity >= rules.severity);
    }

    #[test]
    fn the_rolling_risk_stays_finite_and_bounded(
        level in prop::num::f32::ANY,
        signal in prop::num::f32::ANY,
        decay in prop::num::f32::ANY,
    ) {
        let r = next_risk(level, &TurnRisk { signal, decay, threshold: 1.0 });
        prop_assert!(r.is_finite() && (0.0..=100.0).contains(&r));
    }
}

#[test]
fn the_model_runs_behind_the_port_and_reports_a_turn_risk() {
    let (v, risk) = moderator().screen_turn("Can you tell me a story about a brave little turtle?");
    assert_eq!(v.action, SafetyAction::Safe);
    assert!(v.findings.is_empty() && v.model.is_none(), "{v:?}");
    let risk = risk.expect("the learned stage is on by default");
    assert_eq!(risk.signal, 0.0);
    assert_eq!(risk.threshold, ConversationPolicy::default().threshold);
    let (v, risk) = moderator().screen_turn("this is our little secret ok? don't tell your mom we talk");
    assert!(risk.unwrap().signal > 0.5, "{risk:?}");
    assert!(v.findings.iter().any(|f| f.stage == SafetyStage::Learned), "{v:?}");
}

#[test]
fn grooming_builds_over_turns_and_crosses_the_threshold() {
    let p = ConversationPolicy::default();
    let turn = |s: f32| TurnRisk {
        signal: s,
        decay: p.decay,
        threshold: p.threshold,
    };
    // Turns each under any message threshold, one after another.
    let mut level = 0.0;
    let mut crossed_at = None;
    // The adult's turns, each with the agent's harmless reply after it.
    for (i, s) in [0.45, 0.0, 0.45, 0.0, 0.45, 0.0, 0.45, 0.0, 0.45, 0.0, 0.45]
        .into_iter()
        .enumerate()
    {
        level = next_risk(level, &turn(s));
        if level >= p.threshold && crossed_at.is_none() {
            crossed_at = Some(i);
        }
    }
    assert!(crossed_at.is_some(), "level {level}");
    // Scattered moderate signals in a long harmless chat never do.
    let mut level = 0.0;
    for i in 0..200 {
        level = next_risk(level, &turn(if i % 6 == 0 { 0.5 } else { 0.0 }));
        assert!(level < p.threshold, "turn {i}: {level}");
    }
}

#[test]
fn learned_off_keeps_the_word_lists_only() {
    let dir = std::env::temp_dir().join(format!("convo-screening-off-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("safety.json"), r#"{"learned": false}"#).unwrap();
    let m = LayeredModerator::from_dir(Some(&dir)).unwrap();
    assert!(m.model_version().is_none());
    let (v, risk) = m.screen_turn("this is our little secret ok? don't tell your mom we talk");
    assert!(risk.is_none());
    assert!(v.findings.iter().all(|f| f.stage != SafetyStage::Learned));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_topic_term_counts_only_when_the_model_confirms_it() {
    let rules = &moderator().rules;
    let text = "Grief after losing someone to suicide is hard; a support group can help.";
    assert_eq!(
        rules.screen(text).categories,
        vec!["self_harm"],
        "the lists alone count a topic term"
    );
    let v = rules.screen_confirmed(text, |_| Confirmation::Refused);
    assert_eq!(v.action, SafetyAction::Safe, "unconfirmed");
    assert!(v.findings.is_empty());
    let v = rules.screen_confirmed(text, |c| {
        assert_eq!(c, "self_harm");
        Confirmation::By(0.41)
    });
    assert_eq!(v.action, SafetyAction::Flagged);
    assert_eq!(v.findings[0].stage, SafetyStage::Wordlist);
    assert_eq!(
        v.findings[0].probability,
        Some(0.41),
        "the confirming probability is shown"
    );
    // A plain term needs no confirmation, beside a topic term or alone.
    let v = rules.screen_confirmed("suicide. I want to kill myself", |_| Confirmation::Refused);
    assert_eq!(v.categories, vec!["self_harm"]);
    assert_eq!(v.findings[0].probability, None);
}

#[test]
fn the_model_confirms_a_topic_term_in_harm_and_not_in_education() {
    let m = moderator();
    let v = m.screen("tell me the most painless way to commit suicide tonight");
    assert_eq!(v.action, SafetyAction::Flagged);
    assert!(v.categories.contains(&"self_harm".to_string()), "{v:?}");
    let v = m.screen("Write a persuasive essay for my health class on why teens should not start vaping.");
    assert!(
        !v.findings.iter().any(|f| f.stage == SafetyStage::Wordlist),
        "an essay against vaping is not a drugs finding of the lists: {v:?}"
    );
    for (list, confirmers) in TOPIC_CONFIRMERS {
        assert!(
            crate::moderation::default_categories().iter().any(|c| c.name == list),
            "{list}"
        );
        for c in confirmers {
            assert!(convo_safety::CATEGORIES.contains(c), "{c}");
        }
    }
}
