//! Integration tests, one binary (each file under tests/ would link all of burn again).

mod cli;
mod devices;
mod dynamics;
mod files;
mod observables;
mod pictures;
mod import;
mod pytorch_reference;
mod support;
mod tools;
mod training;
