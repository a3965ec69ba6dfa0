//! The decoder's stop-string holding and text streaming.

use super::*;

#[test]
fn stop_strings_hold_back_prefixes_and_cut() {
    let stops = vec!["\n\nUser".to_string()];
    let mut s = StopStrings {
        stops: &stops,
        text: String::new(),
        emitted: 0,
    };
    assert_eq!(s.push("Hello"), ("Hello".to_string(), false));
    assert_eq!(s.push(" there\n"), (" there".to_string(), false));
    assert_eq!(s.push("\nUs"), (String::new(), false));
    assert_eq!(s.push("er: hi"), (String::new(), true));
    assert_eq!(s.text, "Hello there");
}

#[test]
fn stop_strings_release_false_alarms() {
    let stops = vec!["STOP".to_string()];
    let mut s = StopStrings {
        stops: &stops,
        text: String::new(),
        emitted: 0,
    };
    assert_eq!(s.push("ab ST"), ("ab ".to_string(), false));
    assert_eq!(s.push("ART"), ("START".to_string(), false));
    assert_eq!(s.flush(), "");
}
