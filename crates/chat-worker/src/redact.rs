//! Secrets out of what is printed: a URL's password is replaced before the URL reaches a log
//! line, an error message or `check-config`.

/// `url` with the password of its userinfo replaced by `***` (`redis://user:***@host:6379`); a
/// userinfo without a colon (`redis://secret@host`, which Redis URLs read as a password) is
/// replaced whole, and so is the value of every query parameter whose name contains `password`
/// (`?sentinelPassword=***`). Every authority of a comma-separated list is treated (Sentinel
/// URLs). Text that is not a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the path, query or fragment.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The password may contain '@': the host part follows the last one.
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, hosts) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***{hosts}"),
                None => format!("***{hosts}"),
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{}", redact_query(tail))
}

/// The path, query and fragment with the values of password parameters replaced.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let mut redacted = format!("{path}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        redacted.push('#');
        redacted.push_str(fragment);
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:s3cret@10.0.0.1:6379/0",
                "redis://:***@10.0.0.1:6379/0",
            ),
            ("rediss://app:p@ss:w@rd@h:6380", "rediss://app:***@h:6380"),
            ("redis://tokenonly@h", "redis://***@h"),
            (
                "redis-sentinel://u:pw@h1:26379,h2:26379/mymaster",
                "redis-sentinel://u:***@h1:26379,h2:26379/mymaster",
            ),
            ("redis://h/0?x=a@b", "redis://h/0?x=a@b"),
            (
                "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=pw2",
                "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=***",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            if url.contains("s3cret") || url.contains("rd@h") || url.contains(":pw@") {
                assert!(!redact_url(url).contains("s3cret") && !redact_url(url).contains("w@rd"));
            }
        }
    }
}
