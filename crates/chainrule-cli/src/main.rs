//! The `chainrule` command-line tool. Its commands (`grad`, `train`, ...) arrive with
//! the networks-and-training issue; until then it prints what it will do.

fn main() {
    eprintln!("chainrule: no commands yet (grad and train come with the next release)");
    std::process::exit(2);
}
