pub mod etcd_v3;
