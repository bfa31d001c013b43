//! Integration tests, one binary (each file under tests/ would link all of burn again).

mod broken_drivers;
mod cli;
mod corruption;
mod devices;
mod dynamics;
mod files;
mod import;
mod lab_models;
mod lost_work;
mod observables;
mod optimizer;
mod parallel;
mod pictures;
mod programs_agree;
mod pytorch_reference;
mod readbacks;
mod scratch_dir;
mod serve;
mod sparse;
mod support;
mod tool_specs;
mod tools;
mod training;
