//! Credentials: argon2id password hashing off the async executor, random passwords.

pub mod password;

pub use password::{PasswordError, Passwords};
