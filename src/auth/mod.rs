//! Credentials: argon2id password hashing off the async executor, random passwords, and
//! directory login over LDAP.

pub mod ldap;
pub mod password;

pub use password::{PasswordError, Passwords};
