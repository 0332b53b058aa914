pub mod etcd_bolt;
pub mod etcd_datadir;
pub mod etcd_v2;
pub mod etcd_v3;
pub mod files;
pub mod packages;
pub mod profile;
pub mod selection;
