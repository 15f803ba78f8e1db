//! Mistakes that must not compile, with the error the compiler gives for each.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
