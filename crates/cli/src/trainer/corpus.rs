//! A procedural corpus for `quickstart`: short stories assembled from templates and word lists
//! written for this project (no copied prose), so a fresh machine can train without downloads.
//! The structure is regular enough that a tiny model learns it within a minute.

use data::windows::SplitMix64;

struct Character {
    name: &'static str,
    pronoun: &'static str,
    possessive: &'static str,
}

const fn c(name: &'static str, pronoun: &'static str, possessive: &'static str) -> Character {
    Character {
        name,
        pronoun,
        possessive,
    }
}

const CHARACTERS: &[Character] = &[
    c("Mila", "she", "her"),
    c("Tobin", "he", "his"),
    c("Suri", "she", "her"),
    c("Pell", "he", "his"),
    c("Nora", "she", "her"),
    c("Jasper", "he", "his"),
    c("Wren", "she", "her"),
    c("Otto", "he", "his"),
    c("Lina", "she", "her"),
    c("Bram", "he", "his"),
    c("Ivy", "she", "her"),
    c("Felix", "he", "his"),
];
const ANIMALS: &[&str] = &[
    "rabbit", "fox", "duck", "bear", "mouse", "owl", "frog", "puppy", "kitten", "turtle",
];
const ADJECTIVES: &[&str] = &[
    "little", "happy", "curious", "brave", "sleepy", "kind", "tiny", "quiet", "funny", "gentle",
];
const PLACES: &[&str] = &[
    "near a big river",
    "in a green forest",
    "by the old mill",
    "on a sunny hill",
    "in a small village",
    "under a tall tree",
    "next to a blue lake",
];
const ACTIVITIES: &[(&str, &str)] = &[
    ("play in the grass", "played in the grass"),
    ("sing songs", "sang songs"),
    ("build towers of sticks", "built towers of sticks"),
    ("look at the clouds", "looked at the clouds"),
    ("run around the pond", "ran around the pond"),
    ("pick red berries", "picked red berries"),
    ("draw pictures in the sand", "drew pictures in the sand"),
];
const COLORS: &[&str] = &["red", "blue", "yellow", "green", "shiny", "round", "soft"];
const OBJECTS: &[&str] = &["ball", "box", "hat", "kite", "stone", "cup", "book", "bell"];
const SPOTS: &[&str] = &[
    "behind a rock",
    "under a leaf",
    "in the mud",
    "near the path",
    "on the bridge",
];
const FEELINGS: &[&str] = &["happy", "proud", "glad", "excited", "calm"];
const WEATHER: &[&str] = &["sunny", "rainy", "windy", "cold", "warm"];

fn pick<'a, T>(rng: &mut SplitMix64, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// One story.
pub fn story(rng: &mut SplitMix64) -> String {
    let hero = pick(rng, CHARACTERS);
    let mut friend = pick(rng, CHARACTERS);
    while friend.name == hero.name {
        friend = pick(rng, CHARACTERS);
    }
    let (adj, animal, animal2) = (
        pick(rng, ADJECTIVES),
        pick(rng, ANIMALS),
        pick(rng, ANIMALS),
    );
    let place = pick(rng, PLACES);
    let (act, _) = pick(rng, ACTIVITIES);
    let (_, act2_past) = pick(rng, ACTIVITIES);
    let (color, object, spot) = (pick(rng, COLORS), pick(rng, OBJECTS), pick(rng, SPOTS));
    let feeling = pick(rng, FEELINGS);
    let weather = pick(rng, WEATHER);
    let (h, p, pp) = (hero.name, hero.pronoun, hero.possessive);
    let f = friend.name;
    match rng.below(3) {
        0 => format!(
            "Once upon a time, there was a {adj} {animal} named {h}. {h} lived {place}. \
             Every day, {p} liked to {act}. One {weather} day, {h} found a {color} {object} \
             {spot}. \"What a nice {object}!\" said {h}. {P} showed it to {pp} friend {f} the \
             {animal2}. They {act2_past} together until the sun went down. {h} felt {feeling}.",
            P = capitalize(p)
        ),
        1 => format!(
            "One {weather} morning, {h} the {animal} woke up early. {P} wanted to {act}. \
             On the way, {p} met {f}, a {adj} {animal2}. \"Can I come with you?\" asked {f}. \
             \"Yes!\" said {h}. They found a {color} {object} {spot} and {act2_past}. \
             At the end of the day, {h} and {f} were {feeling} friends.",
            P = capitalize(p)
        ),
        _ => format!(
            "{h} was a {adj} {animal} who lived {place}. {P} lost {pp} {color} {object}. \
             {h} looked {spot}, but it was not there. Then {f} the {animal2} came to help. \
             \"Let us look together,\" said {f}. Soon they found the {object}, and {h} was \
             {feeling}. After that, they {act2_past} every {weather} day.",
            P = capitalize(p)
        ),
    }
}

/// `n` stories separated by `<|endoftext|>` lines (the TinyStories file convention).
pub fn corpus(n: usize, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(&story(&mut rng));
        out.push_str("\n<|endoftext|>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_seeded_and_splits_into_stories() {
        let a = corpus(20, 1);
        assert_eq!(a, corpus(20, 1));
        assert_ne!(a, corpus(20, 2));
        let docs = super::super::data_source::split_documents(&a);
        assert_eq!(docs.len(), 20);
        assert!(docs.iter().all(|d| d.ends_with('.') && !d.contains("{")));
    }
}
