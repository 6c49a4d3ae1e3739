//! End-to-end tests of Sunlight: real `sunlight` processes on loopback ports, queried
//! over Flight SQL as a client would, checked against DataFusion over the same files.

mod attacks;
mod audit;
mod bad_files;
mod demo;
mod federation;
mod file_layouts;
mod flight_sql;
mod generated;
mod ground_truth;
mod models;
mod mtls;
mod oracle;
mod outside_client;
mod replicas;
mod s3_root;
mod support;
