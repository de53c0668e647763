//! Generates the gRPC server and client from `proto/valori.proto` (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/valori.proto");
    tonic_prost_build::configure().compile_protos(&["proto/valori.proto"], &["proto"])?;
    Ok(())
}
