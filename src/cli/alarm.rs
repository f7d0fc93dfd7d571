//! `ember alarm list` and `ember alarm disarm`, printed as etcdctl 3.4
//! prints them.
//!
//! etcd's alarm answers carry no header, so none is printed: `simple` is
//! one `memberID:ID alarm:KIND ` line per alarm (Go's compact text form,
//! trailing space included), `json` is `{"alarms":[{"memberID":ID,
//! "alarm":N}]}` with etcd's kind numbers (`{}` when none), and `fields`
//! is `"MemberID"` and `"AlarmType"` lines per alarm. etcdctl has no table
//! for alarms; `-w table` is refused as there. `disarm` clears every alarm
//! raised and prints those it cleared.

use super::CliError;
use super::format::{self, Format, JsonObject, emit};
use super::output::{connect, failed, write_failed};
use crate::flags::Parsed;
use crate::proto::{AlarmMember, AlarmResponse, AlarmType};

pub fn run_alarm(parsed: &Parsed) -> Result<(), CliError> {
    let what = match parsed.positionals.as_slice() {
        [what] if what == "list" || what == "disarm" => what.clone(),
        [what, ..] if what == "list" || what == "disarm" => {
            return Err(CliError::Usage(format!("alarm {what} command accepts no arguments")));
        }
        _ => return Err(CliError::Usage("alarm takes 'list' or 'disarm'".to_string())),
    };
    let format = format::write_format_no_table(parsed, &format!("alarm {what}"))?;
    let mut client = connect(parsed)?;
    let response = match what.as_str() {
        "list" => client.alarm_list().map_err(failed)?,
        _ => client.alarm_disarm().map_err(write_failed)?,
    };
    emit(&render(format, &response))
}

/// etcd's name for an alarm kind, as Go prints the enum.
pub fn alarm_name(alarm: AlarmType) -> &'static str {
    match alarm {
        AlarmType::None => "NONE",
        AlarmType::NoSpace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
    }
}

/// etcd's number for an alarm kind.
fn alarm_number(alarm: AlarmType) -> i128 {
    match alarm {
        AlarmType::None => 0,
        AlarmType::NoSpace => 1,
        AlarmType::Corrupt => 2,
    }
}

/// One alarm as etcd's status errors and `alarm list` print it.
pub fn alarm_text(alarm: &AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", alarm.member_id, alarm_name(alarm.alarm))
}

pub fn render(format: Format, response: &AlarmResponse) -> Vec<u8> {
    let mut out = String::new();
    match format {
        Format::Json => {
            let alarms: Vec<String> = response
                .alarms
                .iter()
                .map(|a| {
                    JsonObject::default()
                        .int("memberID", a.member_id.into())
                        .int("alarm", alarm_number(a.alarm))
                        .finish()
                })
                .collect();
            out = JsonObject::default().list("alarms", alarms).finish() + "\n";
        }
        Format::Fields => {
            for a in &response.alarms {
                out.push_str(&format!("\"MemberID\" : {}\n", a.member_id));
                out.push_str(&format!("\"AlarmType\" : {}\n", alarm_name(a.alarm)));
            }
        }
        Format::Simple | Format::Table => {
            for a in &response.alarms {
                out.push_str(&alarm_text(a));
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised() -> AlarmResponse {
        let alarms = vec![
            AlarmMember { member_id: 13668033151171901709, alarm: AlarmType::NoSpace },
            AlarmMember { member_id: 7, alarm: AlarmType::Corrupt },
        ];
        AlarmResponse { alarms, ..AlarmResponse::default() }
    }

    #[test]
    fn the_formats_are_etcdctls() {
        let simple = String::from_utf8(render(Format::Simple, &raised())).unwrap();
        assert_eq!(
            simple,
            "memberID:13668033151171901709 alarm:NOSPACE \nmemberID:7 alarm:CORRUPT \n"
        );
        let json = String::from_utf8(render(Format::Json, &raised())).unwrap();
        assert_eq!(
            json,
            "{\"alarms\":[{\"memberID\":13668033151171901709,\"alarm\":1},\
             {\"memberID\":7,\"alarm\":2}]}\n"
        );
        let fields = String::from_utf8(render(Format::Fields, &raised())).unwrap();
        assert!(
            fields.starts_with("\"MemberID\" : 13668033151171901709\n\"AlarmType\" : NOSPACE\n")
        );
    }

    #[test]
    fn no_alarms_print_nothing_or_an_empty_object() {
        let none = AlarmResponse::default();
        assert!(render(Format::Simple, &none).is_empty());
        assert_eq!(render(Format::Json, &none), b"{}\n");
    }
}
