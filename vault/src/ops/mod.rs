pub mod backup;
pub mod etcd_restore;
pub mod files;
pub mod packing;
pub mod read;
pub mod restore;
pub mod verify;
