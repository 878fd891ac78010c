//! What an executor under test is told to do wrong (the node's `--misbehave` items that
//! concern the market); all off by default.

/// Files by name.
type Files = std::collections::BTreeMap<String, Vec<u8>>;

/// The market's misbehaviours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// `forge-receipts`: signs receipts naming an output it did not produce.
    pub forge_receipts: bool,
    /// `stall-answers=MS`: holds each answer back this many milliseconds, 0 when off.
    pub stall_answers_ms: u64,
    /// `inflate-fuel`: signs receipts claiming a hundred times the fuel it used.
    pub inflate_fuel: bool,
    /// `fake-output`: returns made-up output (and output files), its receipt's hashes
    /// consistent with it.
    pub fake_output: bool,
    /// `overprice`: offers on every task at ten times the requester's maximum price.
    pub overprice: bool,
    /// `tamper-chunks`: as a requester, flips a byte of every module chunk it serves.
    pub tamper_chunks: bool,
    /// `drop-chunk-connection=N`: as a requester, closes the connection instead of
    /// answering the first request for chunk N of a module.
    pub drop_chunk_connection: Option<u32>,
}

impl Misbehaviour {
    /// What an executor answers for a run: the receipt, output and output files as they
    /// are, or as the misbehaviours make them (signed again with the node's key where they
    /// change it).
    pub fn lie(
        &self,
        engine: &zerostate_execution::Engine,
        mut receipt: zerostate_execution::Receipt,
        mut output: Vec<u8>,
        mut files: Files,
    ) -> (zerostate_execution::Receipt, Vec<u8>, Files) {
        if self.forge_receipts {
            // Claims another output than it returns: the signature no longer matches.
            receipt.output_sha256 = hex::encode([0u8; 32]);
            return (receipt, output, files);
        }
        if !self.inflate_fuel && !self.fake_output {
            return (receipt, output, files);
        }
        if self.inflate_fuel {
            receipt.fuel_consumed = receipt.fuel_consumed.saturating_mul(100);
        }
        if self.fake_output && receipt.status == "ok" {
            output = b"42\n".to_vec();
            receipt.output_sha256 = hex::encode(zerostate_execution::sha256(&output));
            for bytes in files.values_mut() {
                *bytes = b"42\n".to_vec();
            }
            if !receipt.output_files_sha256.is_empty() {
                receipt.output_files_sha256 = zerostate_execution::tree_sha256(&files);
            }
        }
        (engine.sign(receipt), output, files)
    }
}
