//! What the fuzzer throws: the commands, their keywords, plausible
//! argument lists per command, and the mutations (odd values, edited
//! argument lists, flipped or copied payload bytes).

use recsys::rng::SplitMix;
use recsys::vector::to_fp32_blob;

pub const DIM: usize = 8;
pub const CATALOGS: [&str; 3] = ["fz:c1", "fz:c2", "fz:new"];
pub const USERS: [&str; 3] = ["fz:u1", "fz:u2", "fz:str"];
pub const COMMANDS: [&str; 28] = [
    "RECSYS.CREATE",
    "RECSYS.ALTER",
    "RECSYS.ITEM.SET",
    "RECSYS.ITEM.MSET",
    "RECSYS.ITEM.SETATTRS",
    "RECSYS.ITEM.GET",
    "RECSYS.ITEM.DEL",
    "RECSYS.SEARCH",
    "RECSYS.SIMILAR",
    "RECSYS.INFO",
    "RECSYS.RECOMMEND",
    "RECSYS.EVENT",
    "RECSYS.POPULARITY.SET",
    "RECSYS.BATCH",
    "RECSYS.BATCH.STATUS",
    "RECSYS.PLUGIN.LOAD",
    "RECSYS.PLUGIN.LIST",
    "RECSYS.PLUGIN.INFO",
    "RECSYS.PLUGIN.DEL",
    "RECSYS.MODEL.SET",
    "RECSYS.MODEL.LIST",
    "RECSYS.MODEL.INFO",
    "RECSYS.MODEL.DEL",
    "RECSYS.EXPERIMENT.SET",
    "RECSYS.EXPERIMENT.DEL",
    "RECSYS.EXPERIMENT.REPORT",
    "RECSYS.EXPERIMENT.SYNC",
    "RECSYS.COPIES.WAIT",
];
/// Words the commands know, thrown in at random.
pub const KEYWORDS: [&str; 55] = [
    "EXPERIMENT",
    "REQUEST",
    "VARIANT",
    "OPTIONS",
    "DIM",
    "METRIC",
    "M",
    "EF_CONSTRUCTION",
    "EF_SEARCH",
    "QUANT",
    "VALUES",
    "FP32",
    "ATTRS",
    "EF",
    "WITHSCORES",
    "K",
    "CANDIDATES",
    "VECTOR",
    "WHERE",
    "EXCLUDE_SEEN",
    "EXCLUDE",
    "MIN_SCORE",
    "POSITIVE",
    "NEGATIVE",
    "STRATEGY",
    "BEST_SCORE",
    "SOURCES",
    "MERGE",
    "FALLBACK",
    "WITHSOURCE",
    "SEQUENCE",
    "SOFTMAX",
    "SEED",
    "DIVERSITY",
    "EXPLAIN",
    "FILTER",
    "ORDER",
    "ARGS",
    "FAILOPEN",
    "RANK",
    "TYPE",
    "WEIGHT",
    "TS",
    "MATCH",
    "INTO",
    "TTL",
    "REPLACE",
    "ROLE",
    "SCHEMA",
    "DENSE",
    "SPARSE",
    "COSINE",
    "L2",
    "Q8",
    "QUERY",
];

/// Makes one RECOMMEND option with its values.
type OptionGen = fn(&mut Gen) -> Vec<Vec<u8>>;

pub struct Gen {
    pub rng: SplitMix,
    pub plugins: Vec<Vec<u8>>,
    pub models: Vec<Vec<u8>>,
}

impl Gen {
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.uniform() < p
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A value meant to break parsers: odd numbers, NUL bytes, huge or
    /// binary strings, unbalanced brackets.
    pub fn nasty(&mut self) -> Vec<u8> {
        match self.below(16) {
            0 => Vec::new(),
            1 => b"a\0b".to_vec(),
            2 => b"\0".to_vec(),
            3 => self
                .pick(&["nan", "NaN", "inf", "-inf", "1e309", "-0", "1e-320"])
                .into(),
            4 => self
                .pick(&[
                    "-1",
                    "0",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "18446744073709551616",
                    "4611686018427387903",
                ])
                .into(),
            5 => vec![b'x'; 1 << (10 + self.below(11))],
            6 => (0..self.below(64))
                .map(|_| self.rng.next_u64() as u8)
                .collect(),
            7 => format!(
                "{}1{}",
                "(".repeat(self.below(200)),
                ")".repeat(self.below(200))
            )
            .into(),
            8 => b"{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}".to_vec(),
            9 => vec![0xff, 0xfe, 0x80],
            10 => "[1,2,3,4,5,6,7,8,9].all(a, [1,2,3,4,5,6,7,8,9].all(b, a != b || true))".into(),
            11 => self.pick(&KEYWORDS).into(),
            12 => format!("item:{}", self.below(300)).into(),
            13 => self.pick(&CATALOGS).into(),
            14 => (self.rng.normal() * 1e3).to_string().into(),
            _ => vec![b'\xe2', b'\x82'],
        }
    }

    pub fn vector_blob(&mut self, dim: usize) -> Vec<u8> {
        let v: Vec<f32> = (0..dim).map(|_| self.rng.normal() as f32).collect();
        to_fp32_blob(&v)
    }

    pub fn values(&mut self, dim: usize) -> Vec<Vec<u8>> {
        let mut out = vec![b"VALUES".to_vec()];
        out.extend((0..dim).map(|_| format!("{:.3}", self.rng.normal()).into_bytes()));
        out
    }

    pub fn attrs(&mut self) -> Vec<u8> {
        let g = self.below(5);
        let p = self.below(100);
        format!(r#"{{"genre":"g{g}","price":{p},"tags":["t{g}"]}}"#).into_bytes()
    }

    pub fn where_expr(&mut self) -> Vec<u8> {
        self.pick(&[
            r#"genre == "g1""#,
            "price < 50",
            r#""t2" in tags"#,
            "tags.exists(t, t == \"t3\")",
            "price / 0 > 1",
            "genre.size() > 100000000",
            "missing == 1 || price >= 0",
        ])
        .into()
    }

    /// Plausible arguments for `cmd` (after the name).
    pub fn plausible(&mut self, cmd: &str) -> Vec<Vec<u8>> {
        let cat = || -> Vec<u8> { b"fz:c1".to_vec() };
        let mut a: Vec<Vec<u8>> = Vec::new();
        let b = |s: &str| s.as_bytes().to_vec();
        match cmd {
            "RECSYS.CREATE" => {
                a.push(self.pick(&CATALOGS).into());
                a.extend([b("DIM"), (1 + self.below(16)).to_string().into()]);
                if self.chance(0.5) {
                    a.extend([b("METRIC"), self.pick(&["IP", "COSINE", "L2"]).into()]);
                }
                if self.chance(0.3) {
                    a.extend([b("QUANT"), self.pick(&["F32", "Q8"]).into()]);
                }
            }
            "RECSYS.ITEM.SET" => {
                a.extend([cat(), format!("item:{}", self.below(300)).into()]);
                if self.chance(0.5) {
                    a.extend(self.values(DIM));
                } else {
                    a.extend([b("FP32"), self.vector_blob(DIM)]);
                }
                if self.chance(0.5) {
                    a.extend([b("ATTRS"), self.attrs()]);
                }
            }
            "RECSYS.ITEM.MSET" => {
                a.push(cat());
                let with_attrs = self.chance(0.5);
                if with_attrs {
                    a.push(b("WITHATTRS"));
                }
                for _ in 0..1 + self.below(5) {
                    a.push(format!("item:{}", self.below(300)).into());
                    a.push(self.vector_blob(DIM));
                    if with_attrs {
                        a.push(self.attrs());
                    }
                }
            }
            "RECSYS.ALTER" => {
                a.extend([
                    cat(),
                    b("SESSION"),
                    self.below(12).to_string().into(),
                    self.nasty(),
                ]);
            }
            "RECSYS.ITEM.SETATTRS" => {
                a.extend([
                    cat(),
                    format!("item:{}", self.below(300)).into(),
                    self.attrs(),
                ]);
            }
            "RECSYS.ITEM.GET" | "RECSYS.ITEM.DEL" => {
                a.extend([cat(), format!("item:{}", self.below(300)).into()]);
            }
            "RECSYS.SEARCH" => {
                a.extend([cat(), (1 + self.below(20)).to_string().into()]);
                a.extend(self.values(DIM));
                if self.chance(0.3) {
                    a.extend([b("EF"), (1 + self.below(500)).to_string().into()]);
                }
                if self.chance(0.3) {
                    a.push(b("WITHSCORES"));
                }
            }
            "RECSYS.SIMILAR" => {
                a.extend([
                    cat(),
                    format!("item:{}", self.below(300)).into(),
                    (1 + self.below(20)).to_string().into(),
                ]);
            }
            "RECSYS.INFO" | "RECSYS.MODEL.LIST" => a.push(cat()),
            "RECSYS.COPIES.WAIT" => {
                a.push(cat());
                a.push(self.pick(&["0", "1", "-1", "99999", "x"]).into());
                a.push(self.pick(&["1", "0", "3600001", "10"]).into());
            }
            "RECSYS.RECOMMEND" => {
                a.extend([cat(), self.pick(&USERS).into()]);
                a.extend([b("K"), (1 + self.below(20)).to_string().into()]);
                let options: [OptionGen; 18] = [
                    |g| {
                        let name = ["fzab", "nope", "bad name"][g.below(3)];
                        vec![b"EXPERIMENT".to_vec(), name.as_bytes().to_vec()]
                    },
                    |g| {
                        let names = ["user", "similar", "popular", "latest"];
                        let n = g.below(4);
                        let mut o = vec![b"SOURCES".to_vec(), n.to_string().into()];
                        for _ in 0..n {
                            o.push(names[g.below(4)].as_bytes().to_vec());
                            o.push(g.below(30).to_string().into());
                        }
                        if g.below(2) == 0 {
                            o.extend([
                                b"MERGE".to_vec(),
                                [&b"RRF"[..], b"SCORE", b"MAX"][g.below(3)].to_vec(),
                            ]);
                        }
                        o
                    },
                    |g| {
                        let mut o = vec![
                            b"FALLBACK".to_vec(),
                            [&b"popular"[..], b"latest", b"none"][g.below(3)].to_vec(),
                        ];
                        if g.below(2) == 0 {
                            o.push(b"WITHSOURCE".to_vec());
                        }
                        o
                    },
                    |g| {
                        let n = g.below(4);
                        let mut o = vec![b"EXCLUDE".to_vec(), n.to_string().into()];
                        o.extend((0..n).map(|_| format!("item:{}", g.below(300)).into_bytes()));
                        o
                    },
                    |g| {
                        let n = g.below(4);
                        let list = if g.below(2) == 0 {
                            "POSITIVE"
                        } else {
                            "NEGATIVE"
                        };
                        let mut o = vec![list.as_bytes().to_vec(), n.to_string().into()];
                        for _ in 0..n {
                            o.push(format!("item:{}", g.below(320)).into_bytes());
                            if g.below(3) == 0 {
                                o.extend([b"WEIGHT".to_vec(), g.nasty()]);
                            }
                        }
                        o
                    },
                    |g| {
                        let s = ["AVERAGE", "BEST_SCORE", "best_score", "MAX"][g.below(4)];
                        vec![b"STRATEGY".to_vec(), s.as_bytes().to_vec()]
                    },
                    |g| vec![b"MIN_SCORE".to_vec(), g.nasty()],
                    |g| vec![b"SEQUENCE".to_vec(), g.nasty()],
                    |g| vec![b"WHERE".to_vec(), g.where_expr()],
                    |g| {
                        vec![
                            b"SESSION".to_vec(),
                            g.below(12).to_string().into(),
                            g.nasty(),
                        ]
                    },
                    |_| vec![b"EXCLUDE_SEEN".to_vec()],
                    |g| {
                        vec![
                            b"SOFTMAX".to_vec(),
                            b"0.5".to_vec(),
                            b"SEED".to_vec(),
                            g.below(9).to_string().into(),
                        ]
                    },
                    |_| vec![b"DIVERSITY".to_vec(), b"genre".to_vec(), b"2".to_vec()],
                    |_| vec![b"EXPLAIN".to_vec()],
                    |_| vec![b"WITHSCORES".to_vec()],
                    |_| vec![b"RANK".to_vec(), b"ctr".to_vec()],
                    |_| {
                        vec![
                            b"FILTER".to_vec(),
                            b"fzfilter".to_vec(),
                            b"ARGS".to_vec(),
                            b"genre=g1".to_vec(),
                        ]
                    },
                    |g| vec![b"VECTOR".to_vec(), g.vector_blob(DIM)],
                ];
                for _ in 0..self.below(4) {
                    let o = options[self.below(options.len())];
                    a.extend(o(self));
                }
            }
            "RECSYS.EVENT" => {
                a.extend([
                    cat(),
                    self.pick(&USERS).into(),
                    format!("item:{}", self.below(300)).into(),
                ]);
                if self.chance(0.5) {
                    a.extend([b("TYPE"), self.pick(&["view", "buy", "x y"]).into()]);
                }
                if self.chance(0.3) {
                    a.extend([b("WEIGHT"), format!("{:.2}", self.rng.normal()).into()]);
                }
                if self.chance(0.2) {
                    a.extend([b("TS"), self.nasty()]);
                }
                if self.chance(0.3) {
                    let id = match self.below(3) {
                        0 => format!(
                            "fzab:{}:{}:{}:{:016x}",
                            self.below(3),
                            self.below(3),
                            self.below(9),
                            self.below(99)
                        )
                        .into(),
                        1 => self.nasty(),
                        _ => b("fzab:1:0:1:0000000000000001"),
                    };
                    a.extend([b("REQUEST"), id]);
                }
            }
            "RECSYS.EXPERIMENT.SET" => {
                a.extend([cat(), self.pick(&["fzab", "fzcd", "bad name"]).into()]);
                for _ in 0..self.below(4) {
                    a.extend([b("VARIANT"), self.pick(&["a", "b", "a", ""]).into()]);
                    if self.chance(0.6) {
                        a.extend([
                            b("WEIGHT"),
                            self.pick(&["0", "1", "90", "-1", "1e99"]).into(),
                        ]);
                    }
                    if self.chance(0.6) {
                        let options = self.pick(&[
                            "K 3",
                            "WHERE 'genre == \"g1\"'",
                            "FILTER fzfilter ARGS genre=g1",
                            "K 0",
                            "WHERE '",
                            "RANK ctr",
                            "EXPLAIN",
                        ]);
                        a.extend([b("OPTIONS"), options.into()]);
                    }
                }
                if self.chance(0.1) {
                    a.extend([b("CREATED"), self.nasty()]);
                }
            }
            "RECSYS.EXPERIMENT.DEL" | "RECSYS.EXPERIMENT.REPORT" => {
                a.extend([cat(), self.pick(&["fzab", "fzcd", "nope"]).into()]);
            }
            "RECSYS.EXPERIMENT.SYNC" => {
                a.extend([
                    cat(),
                    self.pick(&["ADD", "STATE", "X"]).into(),
                    self.nasty(),
                ]);
            }
            "RECSYS.POPULARITY.SET" => {
                a.extend([cat(), b("EPOCH"), self.nasty()]);
                for _ in 0..1 + self.below(3) {
                    a.push(format!("item:{}", self.below(300)).into());
                    a.push(format!("{:.3}", self.rng.normal().abs() * 10.0).into());
                }
            }
            "RECSYS.BATCH" => {
                a.extend([
                    cat(),
                    b("MATCH"),
                    b("fz:u*"),
                    b("K"),
                    b("3"),
                    b("INTO"),
                    self.pick(&["fz:out:", "", "fz:"]).into(),
                ]);
            }
            "RECSYS.BATCH.STATUS" if self.chance(0.5) => {
                a.push((1 + self.below(5)).to_string().into());
            }
            "RECSYS.PLUGIN.LOAD" => {
                a.push(self.pick(&["fzfilter", "fzorder", "fz-x"]).into());
                let bytes = if !self.plugins.is_empty() && self.chance(0.5) {
                    let i = self.below(self.plugins.len());
                    let mut p = self.plugins[i].clone();
                    self.mutate_bytes(&mut p);
                    p
                } else {
                    self.nasty()
                };
                a.push(bytes);
                if self.chance(0.5) {
                    a.push(b("REPLACE"));
                }
            }
            "RECSYS.PLUGIN.INFO" | "RECSYS.PLUGIN.DEL" => {
                a.push(self.pick(&["fzfilter", "fzorder", "nope"]).into());
            }
            "RECSYS.MODEL.SET" => {
                a.extend([cat(), self.pick(&["ctr", "q", "x"]).into(), b("DLRM")]);
                let bytes = if !self.models.is_empty() && self.chance(0.6) {
                    let i = self.below(self.models.len());
                    let mut m = self.models[i].clone();
                    if self.chance(0.5) {
                        self.mutate_bytes(&mut m);
                    }
                    m
                } else {
                    self.nasty()
                };
                a.push(bytes);
                if self.chance(0.3) {
                    a.extend([b("ROLE"), self.pick(&["RANK", "QUERY"]).into()]);
                }
                a.extend([
                    b("SCHEMA"),
                    self.pick(&[
                        "DENSE user.age DENSE user.income DENSE score SPARSE item.genre 8 HASH",
                        "DENSE user.a SPARSE item.genre 100 VOCAB g1,g2",
                        "SPARSE score 4",
                    ])
                    .into(),
                ]);
            }
            "RECSYS.MODEL.INFO" | "RECSYS.MODEL.DEL" => {
                a.extend([cat(), self.pick(&["ctr", "q", "x"]).into()]);
            }
            _ => {}
        }
        a
    }

    /// Flips, truncates or overwrites a few bytes.
    pub fn mutate_bytes(&mut self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        match self.below(5) {
            0 => {
                let cut = self.below(bytes.len());
                bytes.truncate(cut);
            }
            1 => {
                for _ in 0..1 + self.below(4) {
                    let i = self.below(bytes.len());
                    bytes[i] ^= 1 << self.below(8);
                }
            }
            2 => {
                // A small or huge little-endian u32 where counts and links live.
                let i = self.below(bytes.len().saturating_sub(4).max(1));
                let v: u32 = *[
                    0,
                    1,
                    2,
                    0xFFFF_FFFF,
                    0x7FFF_FFFF,
                    self.rng.next_u64() as u32,
                ]
                .get(self.below(6))
                .unwrap_or(&0);
                for (j, b) in v.to_le_bytes().iter().enumerate() {
                    if let Some(x) = bytes.get_mut(i + j) {
                        *x = *b;
                    }
                }
            }
            3 => {
                // A short run copied over another: duplicates ids and links.
                let len = 1 + self.below(16);
                if bytes.len() > len {
                    let (from, to) = (self.below(bytes.len() - len), self.below(bytes.len() - len));
                    let run = bytes[from..from + len].to_vec();
                    bytes[to..to + len].copy_from_slice(&run);
                }
            }
            _ => {
                let i = self.below(bytes.len());
                let v = bytes[i];
                bytes.insert(i, v);
            }
        }
    }

    /// Random edits to a plausible argument list.
    pub fn mutate_args(&mut self, args: &mut Vec<Vec<u8>>) {
        for _ in 0..self.below(4) {
            match self.below(4) {
                0 if !args.is_empty() => {
                    let i = self.below(args.len());
                    args[i] = self.nasty();
                }
                1 => {
                    let i = self.below(args.len() + 1);
                    let v = self.nasty();
                    args.insert(i, v);
                }
                2 if !args.is_empty() => {
                    let i = self.below(args.len());
                    args.remove(i);
                }
                _ => {
                    let i = self.below(args.len() + 1);
                    args.insert(i, self.pick(&KEYWORDS).into());
                }
            }
        }
    }
}
