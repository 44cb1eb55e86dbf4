//! Credentials: argon2id password hashing off the async executor, random passwords, and
//! directory login over LDAP, and OpenID Connect single sign-on ([`oidc`]).

pub mod ldap;
pub mod oidc;
pub mod password;

pub use password::{PasswordError, Passwords};
