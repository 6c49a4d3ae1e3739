//! `sunlight demo`, the README's first command, runs the whole flow to its last line.

use crate::support::sunlight;

#[test]
fn the_demo_ends_with_the_julexiang_finding() {
    let out = sunlight(&["demo"]);
    assert!(out.contains("7 models, 750 suspect records"), "{out}");
    // One planted ID a county whose birth date part is 1943-02-31.
    assert!(
        out.contains(
            "data quality, as the nodes report it:\n  140212, 140213, 140214, 140215, 140221, \
             140222, 140223, 140224, 140225, 140226: 1 person(s) have a person_id"
        ),
        "{out}"
    );
    let finding = out
        .split("云州区 聚乐乡")
        .nth(1)
        .unwrap_or_else(|| panic!("no finding in:\n{out}"));
    assert!(finding.contains("| 10     | 20      | 60000.00 |"), "{out}");
}
