//! A SentencePiece BPE model as a Hugging Face `tokenizer.json` (the Llama layout: "▁" prefix
//! and space replacement, BPE with byte fallback, merges ordered by the merged piece's score).

use super::spm::{PieceKind, SpmModel};
use crate::error::{DataError, Result};
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn spm_tokenizer_json(m: &SpmModel, bos: Option<u32>, add_bos: bool) -> Result<String> {
    let pieces = m.pieces();
    let kinds = m.kinds();
    let scores = m.scores();
    let mut vocab = serde_json::Map::with_capacity(pieces.len());
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(pieces.len());
    for (id, p) in pieces.iter().enumerate() {
        // Duplicate pieces cannot be expressed in a JSON vocabulary; keep the first.
        if !vocab.contains_key(p) {
            vocab.insert(p.clone(), json!(id));
            ids.insert(p, id as u32);
        }
    }
    let mergeable = |s: &str| {
        ids.get(s)
            .filter(|&&i| {
                matches!(
                    kinds[i as usize],
                    PieceKind::Normal | PieceKind::UserDefined
                )
            })
            .copied()
    };
    // Every split of a piece into two mergeable pieces is a merge, ranked by the piece's score.
    let mut merges: Vec<(f32, u32, u32, u32, &str, &str)> = Vec::new();
    for (id, p) in pieces.iter().enumerate() {
        if kinds[id] != PieceKind::Normal {
            continue;
        }
        for (cut, _) in p.char_indices().skip(1) {
            let (l, r) = p.split_at(cut);
            if let (Some(li), Some(ri)) = (mergeable(l), mergeable(r)) {
                merges.push((scores[id], id as u32, li, ri, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let merges: Vec<Value> = merges.iter().map(|m| json!([m.4, m.5])).collect();
    let added: Vec<Value> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| {
            matches!(
                k,
                PieceKind::Control | PieceKind::Unknown | PieceKind::UserDefined
            )
        })
        .map(|(id, k)| {
            json!({"id": id, "content": pieces[id], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": *k != PieceKind::UserDefined})
        })
        .collect();
    let post = match (
        add_bos,
        bos.and_then(|b| pieces.get(b as usize).map(|p| (b, p))),
    ) {
        (true, Some((id, p))) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": p, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": p, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": p, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {p.as_str(): {"id": p, "ids": [id], "tokens": [p]}}
        }),
        _ => Value::Null,
    };
    let normalizer = if m.add_dummy_prefix() {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]})
    } else {
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if m.add_dummy_prefix() {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": pieces.get(m.unk_id() as usize),
                  "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
                  "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    serde_json::to_string_pretty(&doc).map_err(|e| DataError::Tokenizer(e.to_string()))
}
