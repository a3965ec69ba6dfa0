//! Tests of the export target checks and staging.

use super::*;

/// The names in `dir`, sorted.
fn entries(dir: impl AsRef<Path>) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    v.sort();
    v
}

fn inputs(d: &Path) -> Vec<(PathBuf, &'static str)> {
    inputs_of([(d, "base checkpoint")])
}

#[test]
fn refuses_inputs_their_insides_and_their_ancestors() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    fs::create_dir_all(base.join("sub")).unwrap();
    fs::write(base.join("config.json"), "{}").unwrap();
    let ins = inputs(&base);
    for out in [
        base.clone(),
        base.join("sub"),
        base.join("new/deeper"),
        t.path().into(),
    ] {
        let e = Target::check(&out, &ins, true).unwrap_err().to_string();
        assert!(
            e.contains("refusing to write over an input"),
            "{out:?}: {e}"
        );
    }
    #[cfg(unix)]
    {
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let e = Target::check(&link, &ins, true).unwrap_err().to_string();
        assert!(e.contains("refusing"), "{e}");
    }
    assert!(fs::read_to_string(base.join("config.json")).unwrap() == "{}");
}

#[test]
fn non_empty_needs_force_and_force_replaces_whole() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("old.bin"), "old").unwrap();
    let e = Target::check(&out, &[], false).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    let s = Target::check(&out, &[], true).unwrap().stage().unwrap();
    s.write("new.bin", b"new").unwrap();
    s.commit().unwrap();
    let names = entries(&out);
    assert_eq!(names, vec![OsString::from("new.bin")]);
    assert_eq!(
        entries(t.path()),
        vec![OsString::from("out")],
        "nothing else left beside it"
    );
}

#[test]
fn an_empty_directory_is_filled_and_a_failure_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    {
        let s = Target::check(&out, &[], false).unwrap().stage().unwrap();
        s.write("a", b"1").unwrap();
        // Dropped without commit: as after any error.
    }
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    let s = Target::check(&out, &[], false).unwrap().stage().unwrap();
    s.write("a", b"1").unwrap();
    s.commit().unwrap();
    assert_eq!(fs::read(out.join("a")).unwrap(), b"1");
}

#[test]
fn a_second_writer_loses_cleanly_without_force() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let a = Target::check(&out, &[], false).unwrap().stage().unwrap();
    let b = Target::check(&out, &[], false).unwrap().stage().unwrap();
    a.write("who", b"a").unwrap();
    b.write("who", b"b").unwrap();
    a.commit().unwrap();
    let e = b.commit().unwrap_err().to_string();
    assert!(e.contains("another process"), "{e}");
    assert_eq!(fs::read(out.join("who")).unwrap(), b"a");
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn symlinks_and_files_as_out_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let elsewhere = t.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let e = Target::check(&link, &[], true).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    let file = t.path().join("file");
    fs::write(&file, "x").unwrap();
    let e = Target::check(&file, &[], true).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
}

/// A target that cannot be renamed onto (a mount point) is filled from inside: under force its
/// old entries go (links removed, not followed), without force anything that appeared there
/// meanwhile wins; a failure leaves the target as it was.
#[cfg(unix)]
#[test]
fn an_unswappable_target_is_filled_from_inside() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("volume");
    fs::create_dir(&out).unwrap();
    let victim = t.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    fs::write(out.join("old.bin"), "old").unwrap();
    fs::create_dir(out.join("old-dir")).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("link")).unwrap();
    let s = Staging::inside(Target::check(&out, &[], true).unwrap()).unwrap();
    s.write("new.bin", b"new").unwrap();
    s.commit().unwrap();
    let names = entries(&out);
    assert_eq!(names, vec![OsString::from("new.bin")]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");

    let empty = t.path().join("empty-volume");
    fs::create_dir(&empty).unwrap();
    let s = Staging::inside(Target::check(&empty, &[], false).unwrap()).unwrap();
    s.write("a", b"1").unwrap();
    fs::write(empty.join("appeared"), "other").unwrap();
    let e = s.commit().unwrap_err();
    assert!(matches!(e, Error::Busy(_)), "{e}");
    let names = entries(&empty);
    assert_eq!(names, vec![OsString::from("appeared")], "staging removed");
}

/// Under force a full target is exchanged whole for the new output (Linux: one atomic
/// `renameat2`), and nothing of the old one stays beside it.
#[test]
fn force_exchanges_a_full_target_whole() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::create_dir(out.join("sub")).unwrap();
    fs::write(out.join("sub/old"), "old").unwrap();
    let s = Target::check(&out, &[], true).unwrap().stage().unwrap();
    s.write("new", b"new").unwrap();
    s.commit().unwrap();
    assert_eq!(fs::read(out.join("new")).unwrap(), b"new");
    assert!(!out.join("sub").exists());
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
}
