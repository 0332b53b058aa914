pub mod etcd_v3;
pub mod files;
pub mod packages;
pub mod profile;
pub mod selection;
