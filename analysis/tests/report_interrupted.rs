//! An interrupted set of cases shows the exit code the command leaves with
//! (130), in every format, whatever the cases that ran found.

use tickburst_analysis::names::Format;
use tickburst_analysis::report::{
    overall, overall_of, render_of, CaseResult, Ending, EXIT_INTERRUPTED,
};
use tickburst_analysis::verdict::{Kind, Verdict};

fn case(name: &str, kind: Option<Kind>, reason: &str) -> CaseResult {
    CaseResult {
        name: name.into(),
        verdict: kind.map(|kind| Verdict {
            kind,
            reasons: vec![reason.into()],
        }),
        error: kind.is_none().then(|| reason.to_string()),
        figures: String::new(),
    }
}

#[test]
fn an_interrupted_set_shows_the_code_it_exits_with() {
    let cases = vec![
        case("a_burst", Some(Kind::Burst), "51541 callbacks"),
        case("b_err", None, "interrupted"),
    ];
    let o = overall_of(&cases, Ending::Interrupted);
    assert_eq!((o.exit_code, o.interrupted), (EXIT_INTERRUPTED, true));
    let null = serde_json::Value::Null;
    let text = render_of(Format::Table, &cases, null.clone(), Ending::Interrupted);
    assert!(text.ends_with("; interrupted; exit 130"), "{text}");
    let ktap = render_of(Format::Ktap, &cases, null.clone(), Ending::Interrupted);
    assert!(ktap.ends_with("; interrupted"), "{ktap}");
    let doc: serde_json::Value =
        serde_json::from_str(&render_of(Format::Json, &cases, null, Ending::Interrupted)).unwrap();
    assert_eq!(doc["overall"]["exit_code"], 130);
    assert_eq!(overall(&cases).exit_code, 1);
}
