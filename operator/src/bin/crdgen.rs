//! Prints a CustomResourceDefinition as YAML: `crdgen valoricluster.yaml` (the default) or
//! `crdgen valoribackup.yaml`, which `crds/` holds under those names (a test fails when they
//! differ).

fn main() {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "valoricluster.yaml".into());
    match valori_operator::crd_yaml_of(&file) {
        Some(yaml) => print!("{yaml}"),
        None => {
            eprintln!(
                "crdgen: no CRD is written to {file:?}; the files are {:?}",
                valori_operator::CRD_FILES
            );
            std::process::exit(2);
        }
    }
}
