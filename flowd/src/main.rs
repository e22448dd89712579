use aya::{
    Ebpf, include_bytes_aligned,
    programs::{SchedClassifier, Xdp},
};
fn main() {
    let bytes = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd"));
    let mut ebpf = Ebpf::load(bytes).unwrap();
    let p: &mut Xdp = ebpf
        .program_mut("flowd_ingress")
        .unwrap()
        .try_into()
        .unwrap();
    if let Err(e) = p.load() {
        println!("xdp: {e:?}");
    }
    let p: &mut SchedClassifier = ebpf
        .program_mut("flowd_egress")
        .unwrap()
        .try_into()
        .unwrap();
    if let Err(e) = p.load() {
        println!("tc: {e:?}");
    }
    println!("ok");
}
