//! ISO 3166-1 alpha-2 country codes, so a typo such as `UK` (the code is `GB`) is an error when
//! the table loads instead of a country that silently never matches an address.

/// The officially assigned ISO 3166-1 alpha-2 codes, sorted, plus `XK` (Kosovo), which is
/// user-assigned but what address data uses for it.
const CODES: [&str; 250] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW",
];

pub(crate) fn is_country_code(code: &str) -> bool {
    CODES.binary_search(&code).is_ok()
}

/// A hint for codes people commonly write instead of the ISO one.
pub(crate) fn hint(code: &str) -> &'static str {
    match code {
        "UK" => " (the United Kingdom is GB)",
        "EL" => " (Greece is GR)",
        _ if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) => {
            " (write it in capitals)"
        }
        _ => " (two capital letters, such as US, CA or GB)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_list_is_sorted_and_unique_so_binary_search_works() {
        assert!(CODES.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(CODES.iter().all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn real_codes_pass_and_common_mistakes_do_not() {
        for code in ["US", "CA", "GB", "DE", "AD", "ZW", "XK"] {
            assert!(is_country_code(code), "{code}");
        }
        for code in ["UK", "EL", "us", "USA", "", "ZZ"] {
            assert!(!is_country_code(code), "{code}");
        }
        assert!(hint("UK").contains("GB"));
        assert!(hint("us").contains("capitals"));
    }
}
