use super::*;

#[test]
fn top_posted_reply_loses_the_quote() {
    let s =
        split("Sounds good.\n\nOn Tue, 2 Jan 2024 at 10:00, Ann <a@x.com> wrote:\n> Shall we?\n");
    assert_eq!(s.stripped, "Sounds good.");
    assert_eq!(s.signature, None);
    assert_eq!(s.status, ReplyStripping::Stripped);
}

#[test]
fn wrapped_attribution_and_signature() {
    let s = split("Yes.\n\nOn Tue, Jan 2, 2024 at 10:00 AM Ann Lee\n<a@x.com> wrote:\n> q\n");
    assert_eq!(s.stripped, "Yes.");
    let s = split("Yes.\n-- \nBob\nAcme\n");
    assert_eq!(
        (s.stripped.as_str(), s.signature.as_deref()),
        ("Yes.", Some("Bob\nAcme"))
    );
    assert_eq!(s.status, ReplyStripping::NothingQuoted);
}

#[test]
fn leading_sign_off_is_content() {
    let s = split("Thanks!\nBob");
    assert_eq!(s.stripped, "Thanks!\nBob");
}

#[test]
fn a_marker_left_in_place_is_unsure() {
    let s = split("Please see below.\n\nFrom: Ann <a@x.com>\n\nThe price is 40.");
    assert_eq!(s.status, ReplyStripping::Unsure);
    let s = split("Here is what Bob wrote:\nWe agree.");
    assert_eq!(s.status, ReplyStripping::Unsure);
}

#[test]
fn html_finds_the_cut_the_text_missed() {
    // The text part has the quote unmarked and without an attribution.
    let text = "Works for me.\n\nTuesday at ten?\nAnn";
    let html = r#"<div>Works for me.</div><div class="gmail_quote"><p>Tuesday at ten?</p><p>Ann</p></div>"#;
    let s = split_with_html(text, Some(html));
    assert_eq!(
        (s.stripped.as_str(), s.status),
        ("Works for me.", ReplyStripping::Stripped)
    );
}

#[test]
fn html_and_text_disagreeing_is_unsure() {
    let text = "Yes.\n\nOn Mon, 8 Jan 2024, Ann <a@x.com> wrote:\n> Tuesday?";
    let html = r#"<div>Yes. And also Wednesday, and bring the contract please.</div><blockquote type="cite">Tuesday?</blockquote>"#;
    let s = split_with_html(text, Some(html));
    assert_eq!(s.status, ReplyStripping::Unsure);
    let agreeing = r#"<div>Yes.</div><blockquote type="cite">Tuesday?</blockquote>"#;
    assert_eq!(
        split_with_html(text, Some(agreeing)).status,
        ReplyStripping::Stripped
    );
}

#[test]
fn an_answer_right_below_a_quote_is_kept() {
    let s = split(
        "On Mon, 8 Jan 2024, Ann <a@x.com> wrote:\n> Could you send the pricing for the enterprise plan and the onboarding?\nSure, attached.\n",
    );
    assert_eq!(s.stripped, "Sure, attached.");
}

#[test]
fn a_line_ending_with_an_address_is_no_attribution_without_a_time() {
    let text = "Hi,\n\n3 licences for ann@example.com:\nthe first for sales.";
    let s = split(text);
    assert_eq!(
        s.stripped,
        "Hi,\n\n3 licences for ann@example.com:\nthe first for sales."
    );
}

#[test]
fn localized_closings_start_the_signature() {
    for (body, closing) in [
        (
            "Passt.\n\nMit freundlichen Grüßen\nAnn Lee\nAcme GmbH",
            "Mit freundlichen Grüßen",
        ),
        ("D'accord.\n\nCordialement,\nAnn Lee", "Cordialement,"),
        ("Ok.\n\nС уважением,\nАнна", "С уважением,"),
        (
            "了解です。\n\nよろしくお願いします\n田中",
            "よろしくお願いします",
        ),
    ] {
        let s = split(body);
        assert!(
            s.signature
                .as_deref()
                .is_some_and(|sig| sig.starts_with(closing)),
            "{body:?}: {s:?}"
        );
    }
}
