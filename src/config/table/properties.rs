//! Properties of settings: any value of any setting is stored or refused with a reason,
//! never a panic, and a value as CONFIG GET shows it is accepted back unchanged.

use super::*;
use proptest::prelude::*;

/// Values near what each kind of setting accepts, and far from it.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-5i64..100_000).prop_map(|n| n.to_string()),
        Just("yes".to_string()),
        Just("no".to_string()),
        "[a-z_:.,*@ -]{0,24}",
        "\\PC{0,24}",
        "(read|write|invalidate|error|slow|cache_fill|all|none)(,(read|write|error|slow|hit|x)){0,3}",
        "(public\\.)?[a-z]{1,6}(,[A-Za-z\"]{1,6}){0,3}",
        "(disable|prefer|require|verify-ca|verify-full|x)",
        "postgres(ql)?://[a-z]{0,5}(:[a-z]{0,4})?@?[a-z0-9.]{0,8}(:[0-9]{0,6})?(/[a-z]{0,5})?(\\?[a-z_=&]{0,20})?",
    ]
}

proptest! {
    #[test]
    fn any_value_of_any_setting_is_stored_or_refused(index in any::<proptest::sample::Index>(), value in value()) {
        let setting = &SETTINGS[index.index(SETTINGS.len())];
        let mut settings = Settings::blank();
        if setting.apply(&mut settings, &value).is_ok()
            && let Some(show) = setting.show
        {
            let shown = show(&settings);
            let mut again = Settings::blank();
            prop_assert!(setting.apply(&mut again, &shown).is_ok(), "{} = {:?} shown as {:?}", setting.name, value, shown);
            prop_assert_eq!(show(&again), shown);
        }
    }

    /// Module arguments in any number and order, `source` blocks among them, load or name
    /// the setting that failed.
    #[test]
    fn any_module_arguments_load_or_fail_with_a_reason(
        args in proptest::collection::vec((prop_oneof!["[a-z_]{1,16}", Just("ttl".to_string()), Just("pool_size".to_string()), Just("source".to_string())], value()), 0..6)
    ) {
        let flat: Vec<String> = args.into_iter().flat_map(|(name, value)| [name, value]).collect();
        if let Err(e) = super::super::load(&flat, &|_| None) {
            prop_assert!(e.message().starts_with("setting ") && e.message().len() > "setting x: ".len());
        }
    }
}
