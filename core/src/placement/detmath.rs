//! Platform-independent arithmetic for placement: a 64-bit mixer, uniform and exponential
//! draws from random bits, and `ln` and `exp` built from IEEE-754 basic operations only, so
//! that every platform computes the same placement.

/// A 64-bit finaliser (MurmurHash3's `fmix64`): a bijection with full avalanche.
pub(super) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The uniform draw of 64 random bits: 53 bits, centred in their interval, so `u` lies in
/// `[2^-54, 1 - 2^-54]`.
pub(super) fn unit(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// `1 - unit(bits)`, exactly.
pub(super) fn one_minus_unit(bits: u64) -> f64 {
    (((!bits) >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// An exponential(1) draw from 64 random bits: `-ln(u)` with `u = unit(bits)`.
///
/// The logarithm is table-driven: `u = 2^k * m` with `m` in `[1, 2)`, `m` near the centre `c` of
/// one of `LN_TABLE_LEN` intervals, `ln(m) = ln(c) + ln(1 + r)` with `r = m / c - 1`,
/// `|r| < 2^-8`, and `ln(1 + r)` by its series to `r^6` (relative error below 1e-16). No
/// branches, no division: a few nanoseconds.
pub(super) fn exponential_of_bits(bits: u64) -> f64 {
    let u = unit(bits);
    let u_bits = u.to_bits();
    let exponent = ((u_bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((u_bits & ((1 << 52) - 1)) | (1023 << 52));
    let index = ((u_bits >> (52 - LN_TABLE_BITS)) & (LN_TABLE_LEN as u64 - 1)) as usize;
    let (inv_centre, ln_centre) = LN_TABLE[index];
    let r = m * inv_centre - 1.0;
    let series = r
        * (1.0
            + r * (-1.0 / 2.0
                + r * (1.0 / 3.0 + r * (-1.0 / 4.0 + r * (1.0 / 5.0 + r * (-1.0 / 6.0))))));
    let k = exponent as f64;
    -(k * LN_2_HIGH + (ln_centre + series + k * LN_2_LOW))
}

/// Bits of the mantissa that pick an interval of the logarithm table.
const LN_TABLE_BITS: u32 = 7;
const LN_TABLE_LEN: usize = 1 << LN_TABLE_BITS;
/// `(1 / c, ln(c))` for the centre `c = 1 + (j + 1/2) / LN_TABLE_LEN` of interval `j`, computed
/// at compile time by `ln` (IEEE arithmetic, the same on every platform).
static LN_TABLE: [(f64, f64); LN_TABLE_LEN] = {
    let mut table = [(0.0, 0.0); LN_TABLE_LEN];
    let mut j = 0;
    while j < LN_TABLE_LEN {
        let centre = 1.0 + (j as f64 + 0.5) / LN_TABLE_LEN as f64;
        table[j] = (1.0 / centre, ln(centre));
        j += 1;
    }
    table
};

/// `ln(2)` split in two (fdlibm's constants): the high part has trailing zero bits, so
/// `k * LN_2_HIGH` is exact for the exponents `k` used here.
const LN_2_HIGH: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN_2_LOW: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// Natural logarithm of a positive normal `x`, from IEEE basic operations only (relative error
/// below 1e-15): `x = 2^k * m` with `m` in `[sqrt(1/2), sqrt(2))`, `ln(m) = 2 atanh(s)` with
/// `s = (m - 1) / (m + 1)`, `|s| < 0.172`, summed as a series to `s^17`.
pub(super) const fn ln(x: f64) -> f64 {
    assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let series = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0
                + z * (1.0 / 7.0
                    + z * (1.0 / 9.0
                        + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0 + z / 17.0)))))));
    let k = exponent as f64;
    k * LN_2_HIGH + (2.0 * s * series + k * LN_2_LOW)
}

/// `e^x` from IEEE basic operations only (relative error below 1e-15); 0 below -708.
pub(super) fn exp(x: f64) -> f64 {
    if x < -708.0 {
        return 0.0;
    }
    assert!(x <= 709.0, "exp({x}) overflows");
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN_2_HIGH) - k * LN_2_LOW;
    // Taylor series of e^r, |r| <= 0.347, to r^13.
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=13 {
        term = term * r / f64::from(n);
        sum += term;
    }
    let k = k as i64;
    // Scale by 2^k in two steps so that 2^k itself stays a normal number.
    let half = k / 2;
    sum * f64::from_bits(((1023 + half) as u64) << 52)
        * f64::from_bits(((1023 + k - half) as u64) << 52)
}
