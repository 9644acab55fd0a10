//! Helpers shared by several test files (`mod common;` in each). Each file uses only some of
//! them, so unused ones are not warnings here.
#![allow(dead_code)]

pub mod browser;
