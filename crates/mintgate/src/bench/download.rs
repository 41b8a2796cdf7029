//! Result-file download benchmark (mint-client against mint-sim, side by side with curl).
