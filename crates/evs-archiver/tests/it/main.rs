/// The benches' batch generator (`examples/gen_batch.rs`): batches at Lambda's limits.
#[allow(dead_code)]
#[path = "../../examples/gen_batch.rs"]
mod gen_batch;
mod handler;
