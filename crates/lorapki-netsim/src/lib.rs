#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod airtime;
pub mod device;
pub mod duty;
pub mod mac;
pub mod ns;
pub mod region;
pub mod rng;
pub mod sim;
pub mod world;
