fn main() {
    eprintln!("imgadm: not built yet");
    std::process::exit(2);
}
