//! hpki-backoffice: the certificate-authority back office for Japan's HPKI second certificate.

pub mod api;
pub mod audit;
pub mod batch;
pub mod clock;
pub mod config;
pub mod console;
pub mod crl;
pub mod demo;
pub mod export;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod office;
pub mod pdf;
pub mod pki;
pub mod portal;
pub mod problem;
pub mod processors;
pub mod projection_runner;
pub mod qr;
pub mod secrets;
pub mod serve;
pub mod settings;
pub mod staff;
pub mod store;
