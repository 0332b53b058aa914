pub mod etcd_v3;
pub mod files;
