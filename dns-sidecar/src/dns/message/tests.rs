//! The wire helpers against hickory's encoder and hand-made messages.

use super::wire::Malformed;
use super::*;

fn query(extra: &[u8], arcount: u8) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, arcount, 1, b'a', 0, 0, 1, 0, 1];
    q.extend_from_slice(extra);
    q
}

#[test]
fn wire_checks() {
    let opt = |rd: &[u8]| {
        let mut v = vec![0, 0, 41, 4, 0xd0, 0, 0, 0, 0];
        v.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        v.extend_from_slice(rd);
        v
    };
    assert_eq!(check_wire(&query(&[], 0)), Ok(()));
    assert_eq!(check_wire(&query(&opt(&[]), 1)), Ok(()));
    assert_eq!(check_wire(&query(&opt(&[0, 10, 0, 2, 1, 2]), 1)), Ok(()));
    assert_eq!(
        check_wire(&query(&opt(&[0, 10, 0, 100]), 1)),
        Err(Malformed::BadOpt),
        "option longer than the OPT"
    );
    assert_eq!(
        check_wire(&query(&opt(&[0, 10, 0, 8, 1, 2, 3, 4]), 1)),
        Err(Malformed::BadOpt)
    );
    assert_eq!(
        check_wire(&query(&opt(&[0, 10]), 1)),
        Err(Malformed::BadOpt),
        "half an option header"
    );
    let mut two = opt(&[]);
    two.extend(opt(&[]));
    assert_eq!(check_wire(&query(&two, 2)), Err(Malformed::BadOpt));
    assert_eq!(
        check_wire(&query(&[], 1)),
        Err(Malformed::Short),
        "a record that is not there"
    );
    // Question names with pointers.
    let mut q = query(&[], 0);
    q.splice(12..15, [0xC0, 0x0E, 0xC0, 0x0C]);
    assert_eq!(check_wire(&q), Err(Malformed::CompressedQuestion));
    // A record whose owner points forward, or to itself.
    let rr = |ptr: u8| vec![0xC0, ptr, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(check_wire(&query(&rr(12), 1)), Ok(()), "backwards to the question");
    assert_eq!(check_wire(&query(&rr(19), 1)), Err(Malformed::BadName), "itself");
    assert_eq!(check_wire(&query(&rr(40), 1)), Err(Malformed::BadName), "forwards");
}

#[test]
fn one_udp_limit_for_every_answer() {
    assert_eq!(client_udp_limit(None, 1232), 512, "no EDNS: 512");
    assert_eq!(client_udp_limit(None, 4096), 512);
    assert_eq!(client_udp_limit(Some(4096), 1232), 1232, "capped by ours");
    assert_eq!(client_udp_limit(Some(1000), 1232), 1000);
    assert_eq!(client_udp_limit(Some(100), 1232), 512, "at least 512");
    // The raw reader and the decoded message agree.
    for (payload, ours) in [(None, 1232), (Some(4096), 1232), (Some(600), 4096), (Some(0), 512)] {
        let mut m = Message::query();
        m.queries.push(hickory_proto::op::Query::query(
            "a.".parse().unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        if let Some(p) = payload {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        let raw = m.to_vec().unwrap();
        let qn = crate::dns::question::question(&raw, ours).unwrap();
        assert_eq!(
            qn.udp_limit,
            udp_limit(&Message::from_vec(&raw).unwrap(), ours),
            "{payload:?}"
        );
        assert_eq!(qn.udp_limit, client_udp_limit(payload, ours));
    }
}

#[test]
fn truncated_answers_are_the_full_paths_bytes() {
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    for (name, edns, rd, cd) in [
        ("www.example.com.", None, true, false),
        ("WwW.Example.COM.", Some(false), false, true),
        ("a.", Some(true), true, true),
    ] {
        let mut m = Message::query();
        m.metadata.id = 0xBEEF;
        m.metadata.recursion_desired = rd;
        m.metadata.checking_disabled = cd;
        m.queries
            .push(Query::query(Name::from_ascii(name).unwrap(), RecordType::TXT));
        if let Some(dnssec_ok) = edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        let raw = m.to_vec().unwrap();
        let req = Message::from_vec(&raw).unwrap();
        let mut resp = response_to(&req, ResponseCode::NoError, true);
        resp.metadata.truncation = true;
        echo_edns(&req, &mut resp, 1232);
        let qn = crate::dns::question::question(&raw, 1232).unwrap();
        let mut out = [0u8; 512];
        let n = truncated_raw(&raw, &qn, &mut out).unwrap();
        assert_eq!(out[..n], resp.to_vec().unwrap()[..], "{name} {edns:?} rd {rd} cd {cd}");
        assert_eq!(truncated_raw(&raw, &qn, &mut out[..n - 1]), None, "does not fit");
    }
}

#[test]
fn questions_match_by_name_without_case_and_type_and_class_exactly() {
    let q = query(&[], 0);
    let mut a = q.clone();
    assert!(same_question(&q, &a));
    a[13] = b'A';
    assert!(same_question(&q, &a), "0x20");
    for (at, byte, what) in [(16, 0x41, "type 65 vs 1"), (18, 3, "class CH")] {
        let mut other = q.clone();
        other[at] = byte;
        let mut upper = other.clone();
        assert!(!same_question(&q, &other), "{what}");
        upper[at] ^= 0x20;
        assert!(
            !same_question(&other, &upper),
            "{what}: types differing in the 0x20 bit"
        );
    }
    assert!(!same_question(&q, &q[..18]), "short");
}

#[test]
fn refused_is_never_longer_than_the_query() {
    let q = query(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0], 1);
    let r = refused_from_raw(&q);
    assert_eq!(r.len(), 19);
    assert_eq!((r[2] & 0x80, r[3] & 0x0F, r[5], r[11]), (0x80, 5, 1, 0));
    let r = refused_from_raw(&q[..12]);
    assert_eq!((r.len(), r[5]), (12, 0));
}
