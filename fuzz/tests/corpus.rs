//! Replays every checked-in fuzz input (`fuzz/corpus/<target>/*`) through
//! its target on stable: CI runs the corpus as ordinary tests, so a crash
//! found once (and its input checked in) stays fixed.

use std::path::Path;

#[test]
fn every_corpus_input_runs_through_its_target_without_a_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut ran = 0;
    for (name, target) in wasmos_fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name} has no corpus");
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", input.display());
            ran += 1;
        }
    }
    eprintln!("{ran} corpus inputs replayed");
}
