//! Splits a directive's raw argument line into words.
//!
//! Apache hands `LanguageGroup` its whole argument line (RAW_ARGS) so that an
//! option value may carry spaces the way an administrator would write it:
//! `command="/srv/venv/bin/python -X dev"` or `env='GREETING=hello world'`.
//! Quotes may open anywhere in a word; inside double quotes a backslash
//! escapes the next character. An unquoted `#` at the start of a word
//! begins a comment that runs to the end of the line (Apache itself has no
//! trailing comments, but administrators write them, as DESIGN.md does).

/// Splits `line` into words, or explains the unbalanced quote.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == quote {
                        closed = true;
                        break;
                    }
                    if q == '\\' && quote == '"' {
                        if let Some(escaped) = chars.next() {
                            current.push(escaped);
                            continue;
                        }
                    }
                    current.push(q);
                }
                if !closed {
                    return Err(format!("unbalanced {quote} quote in: {}", line.trim()));
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn plain_words() {
        assert_eq!(split_words("  a b\tc ").unwrap(), ["a", "b", "c"]);
        assert!(split_words("   ").unwrap().is_empty());
    }

    #[test]
    fn quotes_inside_a_word() {
        assert_eq!(
            split_words(r#"x command="/venv/bin/python -X dev" env='A=b c'"#).unwrap(),
            ["x", "command=/venv/bin/python -X dev", "env=A=b c"]
        );
        assert_eq!(split_words(r#""a \"q\" b""#).unwrap(), [r#"a "q" b"#]);
        assert_eq!(split_words(r#"e="""#).unwrap(), ["e="]);
    }

    #[test]
    fn trailing_comments() {
        assert_eq!(split_words("/api shop   # shop's app").unwrap(), ["/api", "shop"]);
        assert_eq!(split_words("a user=#1000 '#x'").unwrap(), ["a", "user=#1000", "#x"]);
    }

    #[test]
    fn unbalanced_quote_is_an_error() {
        let err = split_words(r#"a command="oops"#).unwrap_err();
        assert!(err.contains("unbalanced \" quote"), "{err}");
    }
}
