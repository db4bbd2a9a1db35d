//! hpki-backoffice: the certificate-authority back office for Japan's HPKI second certificate.

pub mod audit;
pub mod clock;
pub mod config;
pub mod export;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod projection_runner;
pub mod qr;
pub mod serve;
pub mod store;
