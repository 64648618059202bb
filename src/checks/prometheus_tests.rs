use proptest::prelude::*;

use super::*;
use crate::checks::Outcome;

fn vars() -> QueryVars {
    QueryVars {
        app: "shop".into(),
        namespace: "prod".into(),
        color: "green".into(),
        version: "1.4.2".into(),
        revision: 7,
    }
}

fn judge(condition: &str, result: QueryResult) -> Measurement {
    evaluate(&compile_condition(condition).unwrap(), &result)
}

#[test]
fn renders_every_name() {
    let query = r#"sum(rate(http_requests_total{app="{{app}}",namespace="{{ namespace }}",color="{{color}}",version="{{version}}",revision="{{revision}}"}[1m]))"#;
    assert_eq!(
        render_query(query, &vars()).unwrap(),
        r#"sum(rate(http_requests_total{app="shop",namespace="prod",color="green",version="1.4.2",revision="7"}[1m]))"#
    );
    assert_eq!(render_query("up", &vars()).unwrap(), "up");
}

#[test]
fn escapes_values_for_string_literals() {
    let mut vars = vars();
    vars.version = r#"1.0"} or vector(1) #\"#.into();
    assert_eq!(
        render_query(r#"x{version="{{version}}"}"#, &vars).unwrap(),
        r#"x{version="1.0\"} or vector(1) #\\"}"#
    );
}

#[test]
fn unknown_names_and_unclosed_braces_are_errors() {
    let err = render_query("x{app=\"{{application}}\"}", &vars()).unwrap_err();
    assert!(
        err.contains("{{application}}") && err.contains("{{app}}"),
        "{err}"
    );
    let err = check_query_template("x{app=\"{{app\"}").unwrap_err();
    assert!(err.contains("never closed"), "{err}");
    assert!(check_query_template("up{app=\"{{app}}\"}").is_ok());
}

proptest! {
    /// Text without `{{` renders unchanged; rendering never panics.
    #[test]
    fn text_without_placeholders_is_unchanged(text in "[^{]*") {
        prop_assert_eq!(render_query(&text, &vars()).unwrap(), text);
    }

    #[test]
    fn rendering_never_panics(text in ".{0,64}") {
        let _ = render_query(&text, &vars());
    }

    /// A rendered value always stays inside its string literal.
    #[test]
    fn values_cannot_close_the_literal(version in ".{0,32}") {
        let vars = QueryVars { version, ..vars() };
        let rendered = render_query("\"{{version}}\"", &vars).unwrap();
        let inner = &rendered[1..rendered.len() - 1];
        let mut escaped = false;
        for c in inner.chars() {
            prop_assert!(escaped || c != '"', "unescaped quote in {}", rendered);
            escaped = !escaped && c == '\\';
        }
        prop_assert!(!escaped, "dangling backslash in {}", rendered);
    }
}

#[test]
fn conditions_that_do_not_parse_are_found_up_front() {
    let err = compile_condition("result <").unwrap_err();
    assert!(err.contains("does not parse"), "{err}");
    let err = compile_condition("reslt < 0.01").unwrap_err();
    assert!(err.contains("does not use `result`"), "{err}");
    assert!(compile_condition("result < 0.01").is_ok());
    assert!(compile_condition("result.all(x, x < 0.5)").is_ok());
}

#[test]
fn scalar_and_single_sample_results_are_numbers() {
    assert_eq!(
        judge("result < 0.01", QueryResult::Scalar(0.001)).outcome,
        Outcome::Pass
    );
    let m = judge("result < 0.01", QueryResult::Vector(vec![0.2]));
    assert_eq!(m.outcome, Outcome::Fail);
    assert_eq!(m.value.as_deref(), Some("0.2"));
    assert!(m.message.contains("does not hold"), "{}", m.message);
}

#[test]
fn integer_literals_compare_with_results() {
    assert_eq!(
        judge("result < 1", QueryResult::Scalar(0.5)).outcome,
        Outcome::Pass
    );
    assert_eq!(
        judge("result == 3", QueryResult::Scalar(3.0)).outcome,
        Outcome::Pass
    );
}

#[test]
fn many_samples_are_a_list() {
    let result = QueryResult::Vector(vec![0.1, 0.3]);
    assert_eq!(
        judge("result.all(x, x < 0.5)", result.clone()).outcome,
        Outcome::Pass
    );
    assert_eq!(
        judge("size(result) == 2", result.clone()).outcome,
        Outcome::Pass
    );
    assert_eq!(
        judge("result.exists(x, x > 0.2)", result.clone()).outcome,
        Outcome::Pass
    );
    assert_eq!(
        judge("result.all(x, x < 0.2)", result.clone()).outcome,
        Outcome::Fail
    );
    // A number comparison on a list cannot be evaluated: no answer.
    let m = judge("result < 0.5", result);
    assert_eq!(m.outcome, Outcome::Inconclusive);
    assert_eq!(m.value.as_deref(), Some("[0.1, 0.3]"));
}

#[test]
fn empty_and_nan_are_inconclusive_never_pass() {
    for condition in ["result < 0.01", "true || result > 0", "size(result) == 0"] {
        let Ok(condition) = compile_condition(condition) else {
            continue;
        };
        for result in [
            QueryResult::Vector(vec![]),
            QueryResult::Scalar(f64::NAN),
            QueryResult::Vector(vec![0.0, f64::NAN]),
        ] {
            assert_eq!(
                evaluate(&condition, &result).outcome,
                Outcome::Inconclusive,
                "{condition:?} on {result:?}"
            );
        }
    }
}

#[test]
fn non_boolean_conditions_are_inconclusive() {
    let m = judge("result + 1.0", QueryResult::Scalar(1.0));
    assert_eq!(m.outcome, Outcome::Inconclusive);
    assert!(m.message.contains("not true or false"), "{}", m.message);
}

#[test]
fn parses_scalar_and_vector_answers() {
    let scalar =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.25"]}}"#;
    assert_eq!(
        parse_response("p", "q", scalar),
        Ok(QueryResult::Scalar(0.25))
    );
    let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"job":"a"},"value":[1700000000,"1"]},
        {"metric":{"job":"b"},"value":[1700000000,"+Inf"]},
        {"metric":{"job":"c"},"value":[1700000000,"NaN"]}]}}"#;
    match parse_response("p", "q", vector) {
        Ok(QueryResult::Vector(v)) => {
            assert_eq!(v[0], 1.0);
            assert_eq!(v[1], f64::INFINITY);
            assert!(v[2].is_nan());
        }
        other => panic!("{other:?}"),
    }
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(
        parse_response("p", "q", empty),
        Ok(QueryResult::Vector(vec![]))
    );
}

#[test]
fn bad_data_is_an_invalid_query_with_prometheus_text() {
    let body = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unexpected <op:*>"}"#;
    match parse_response("http://prom", "sum(*)", body) {
        Err(QueryError::InvalidQuery { error, query, .. }) => {
            assert_eq!(
                error,
                "invalid parameter \"query\": 1:5: parse error: unexpected <op:*>"
            );
            assert_eq!(query, "sum(*)");
        }
        other => panic!("{other:?}"),
    }
    let timeout = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
    assert!(matches!(
        parse_response("p", "q", timeout),
        Err(QueryError::Unavailable { .. })
    ));
}

#[test]
fn range_vectors_and_garbage_are_not_judged() {
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(matches!(
        parse_response("p", "q[1m]", matrix),
        Err(QueryError::UnsupportedResult { .. })
    ));
    assert!(matches!(
        parse_response("p", "q", "<html>bad gateway</html>"),
        Err(QueryError::Unavailable { .. })
    ));
}
