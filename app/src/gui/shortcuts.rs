//! The workbench's keyboard shortcuts: one table that the app reads each frame (turning the keys
//! pressed into actions) and the Help menu lists.

use eframe::egui::{self, Key, KeyboardShortcut, Modifiers};

use super::actions::{Action, Dialog};

/// How far the arrow keys move t (Shift: one step).
pub const T_STEP: i64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    AddImages,
    SaveSession,
    ExportFigure,
    /// The Shift variants come before their plain twins: they are consumed first.
    TUpOne,
    TDownOne,
    TUp,
    TDown,
    NextBlock,
    PreviousBlock,
    RemoveLastPoint,
    CancelJobs,
}

impl Shortcut {
    /// In the order keys are checked (the Help menu's order too).
    pub const ALL: [Shortcut; 11] = [
        Shortcut::AddImages,
        Shortcut::SaveSession,
        Shortcut::ExportFigure,
        Shortcut::TUpOne,
        Shortcut::TDownOne,
        Shortcut::TUp,
        Shortcut::TDown,
        Shortcut::NextBlock,
        Shortcut::PreviousBlock,
        Shortcut::RemoveLastPoint,
        Shortcut::CancelJobs,
    ];

    pub fn keys(self) -> KeyboardShortcut {
        let (modifiers, key) = match self {
            Shortcut::AddImages => (Modifiers::COMMAND, Key::O),
            Shortcut::SaveSession => (Modifiers::COMMAND, Key::S),
            Shortcut::ExportFigure => (Modifiers::COMMAND, Key::E),
            Shortcut::TUpOne => (Modifiers::SHIFT, Key::ArrowRight),
            Shortcut::TDownOne => (Modifiers::SHIFT, Key::ArrowLeft),
            Shortcut::TUp => (Modifiers::NONE, Key::ArrowRight),
            Shortcut::TDown => (Modifiers::NONE, Key::ArrowLeft),
            Shortcut::NextBlock => (Modifiers::NONE, Key::ArrowDown),
            Shortcut::PreviousBlock => (Modifiers::NONE, Key::ArrowUp),
            Shortcut::RemoveLastPoint => (Modifiers::NONE, Key::Backspace),
            Shortcut::CancelJobs => (Modifiers::NONE, Key::Escape),
        };
        KeyboardShortcut::new(modifiers, key)
    }

    pub fn description(self) -> &'static str {
        match self {
            Shortcut::AddImages => "add images (file dialog)",
            Shortcut::SaveSession => "save the session (file dialog)",
            Shortcut::ExportFigure => "export the figure as PNG (file dialog)",
            Shortcut::TUpOne => "t + 1",
            Shortcut::TDownOne => "t − 1",
            Shortcut::TUp => "t + 10",
            Shortcut::TDown => "t − 10",
            Shortcut::NextBlock => "next block (towards the output)",
            Shortcut::PreviousBlock => "previous block (towards the input)",
            Shortcut::RemoveLastPoint => "remove the last point on the source",
            Shortcut::CancelJobs => "cancel the running jobs",
        }
    }

    pub fn action(self) -> Action {
        match self {
            Shortcut::AddImages => Action::Pick(Dialog::AddImages),
            Shortcut::SaveSession => Action::Pick(Dialog::SaveSession),
            Shortcut::ExportFigure => Action::Pick(Dialog::ExportFigure),
            Shortcut::TUpOne => Action::StepT(1),
            Shortcut::TDownOne => Action::StepT(-1),
            Shortcut::TUp => Action::StepT(T_STEP),
            Shortcut::TDown => Action::StepT(-T_STEP),
            Shortcut::NextBlock => Action::StepBlock(1),
            Shortcut::PreviousBlock => Action::StepBlock(-1),
            Shortcut::RemoveLastPoint => Action::RemoveLastPoint,
            Shortcut::CancelJobs => Action::CancelJobs,
        }
    }

    /// Keys without Ctrl/Cmd belong to a focused widget (a text field, a slider) when there is
    /// one.
    fn plain(self) -> bool {
        !self.keys().modifiers.command
    }
}

/// The actions of the shortcuts pressed this frame. Their key presses are consumed, so no widget
/// acts on them too. Plain keys are left alone while a widget has the keyboard or a menu is open
/// (Escape closes it).
pub fn pressed(ctx: &egui::Context) -> Vec<Action> {
    let keyboard_taken = ctx.memory(|m| m.focused().is_some()) || egui::Popup::is_any_open(ctx);
    ctx.input_mut(|input| {
        Shortcut::ALL
            .into_iter()
            .filter(|s| !(s.plain() && keyboard_taken))
            .filter(|s| input.consume_shortcut(&s.keys()))
            .map(Shortcut::action)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_shortcuts_share_keys_and_shift_variants_come_first() {
        for (i, a) in Shortcut::ALL.iter().enumerate() {
            for b in &Shortcut::ALL[i + 1..] {
                assert_ne!(a.keys(), b.keys(), "{a:?} and {b:?}");
                // Pressing a later shortcut's keys must not trigger an earlier one, which is
                // checked first.
                let (ka, kb) = (a.keys(), b.keys());
                assert!(
                    ka.logical_key != kb.logical_key
                        || !kb.modifiers.matches_logically(ka.modifiers),
                    "{a:?} would take {b:?}'s keys"
                );
            }
        }
    }
}
