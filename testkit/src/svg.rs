//! Reading the pictures tickburst draws, as the plot tests do.

/// The texts of an SVG (trimmed, in document order); panics unless the SVG
/// is well-formed XML.
pub fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect()
}

/// Panics naming the first of `names` that is not one of `texts`, whole.
pub fn assert_has_texts(texts: &[String], names: &[&str]) {
    for name in names {
        assert!(
            texts.iter().any(|t| t == name),
            "{name} missing in {texts:?}"
        );
    }
}
