//! Prints a CustomResourceDefinition as YAML: `crdgen valoricluster.yaml` (the default) or
//! `crdgen valoribackup.yaml`, which `crds/` holds under those names; `crdgen --chart FILE`
//! prints the chart's template of it (`charts/valori-operator/templates/crd-FILE`). Tests fail
//! when the committed files differ.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let chart = args.first().is_some_and(|a| a == "--chart");
    if chart {
        args.remove(0);
    }
    let file = args
        .first()
        .cloned()
        .unwrap_or_else(|| "valoricluster.yaml".into());
    let text = if chart {
        valori_operator::chart_crd_template(&file)
    } else {
        valori_operator::crd_yaml_of(&file)
    };
    match text {
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
