//! A replayer checkpoint as read from its file: `Checkpoint::from_json`,
//! then `Sequencer::resume`.
//!
//! Properties: no panic; a checkpoint that reads writes back to text that
//! reads to the same checkpoint; a sequencer resumed from it gives a
//! checkpoint that resumes to the same state.
#![no_main]

use evs_fuzz::text;
use evs_replay::{Checkpoint, Sequencer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    let Ok(checkpoint) = Checkpoint::from_json(text) else {
        return;
    };
    let json = checkpoint.to_json().expect("a checkpoint that reads writes");
    let back = Checkpoint::from_json(&json).expect("a written checkpoint reads");
    assert_eq!(back, checkpoint, "checkpoint round trip");
    if let Ok(sequencer) = Sequencer::resume(checkpoint) {
        let saved = sequencer.checkpoint();
        let again = Sequencer::resume(saved.clone()).expect("a sequencer's own checkpoint resumes");
        assert_eq!(again.checkpoint(), saved, "resume is stable");
    }
});
