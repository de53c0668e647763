//! Prints the `ValoriCluster` CustomResourceDefinition as YAML (`crds/valoricluster.yaml` is
//! this output; a test fails when they differ).

fn main() {
    print!("{}", valori_operator::crd_yaml());
}
