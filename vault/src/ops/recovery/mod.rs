pub mod certs;
pub mod member;
